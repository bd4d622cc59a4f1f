"""The ``magnitude`` pruner: global unstructured magnitude pruning.

The design notes' "sparse connectivity" (3.1): drop the connections whose weights are smallest,
ranked across the whole model. Shapes stay the teacher's, so MACs and dense latency do not
change; the zeros make the file compress smaller and suit sparse kernels. Weights are ranked by
``|w|`` itself: the plan's scorer is not used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from prunetune import hookimpl
from prunetune.components.pruning import PruneJob, Pruner, PruneRecord
from prunetune.components.selection import group_ratios
from prunetune.errors import UsageError
from prunetune.host.options import EmptyConfig
from prunetune.host.registry import Registry
from prunetune.structure.groups import find_groups, output_layers
from prunetune.structure.masking import KeepMasked
from prunetune.structure.measure import weight_sparsity
from prunetune.structure.plan import StudentPlan

__all__ = ["MagnitudePruner", "prunetune_add_components", "smallest_weights"]

_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: No layer loses more than this share of its weights, so none is cut off entirely.
_MAX_LAYER_SHARE = 0.99


def smallest_weights(
    weights: Mapping[str, torch.Tensor], ratio: float, max_share: float = _MAX_LAYER_SHARE
) -> dict[str, torch.Tensor]:
    """Keep-masks zeroing the ``ratio`` share of all ``weights`` with the smallest ``|w|``.

    The weights are ranked together; ties go to the earlier layer, then the earlier entry.
    No layer loses more than ``floor(max_share * numel)`` entries: where that stops a layer,
    the next smallest weights elsewhere go instead.

    Returns:
        One mask per layer, shaped and typed like its weight: 0 where the weight goes, else 1.
    """
    flat = {name: w.detach().abs().flatten() for name, w in weights.items()}
    if not flat:
        return {}
    eligible = []
    for values in flat.values():
        # A weight may go only if it is among the cap smallest of its own layer; picking the
        # smallest eligible ones overall then never exceeds any layer's cap.
        rank = torch.empty(values.numel(), dtype=torch.long, device=values.device)
        rank[torch.argsort(values, stable=True)] = torch.arange(values.numel(), device=values.device)
        eligible.append(rank < math.floor(max_share * values.numel() + 1e-9))
    magnitudes, allowed = torch.cat(list(flat.values())), torch.cat(eligible)
    n_cut = min(math.floor(ratio * magnitudes.numel() + 1e-9), int(allowed.sum()))
    candidates = allowed.nonzero().squeeze(1)
    chosen = candidates[torch.argsort(magnitudes[candidates], stable=True)[:n_cut]]
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    keep[chosen] = False
    masks, start = {}, 0
    for name, weight in weights.items():
        masks[name] = keep[start : start + weight.numel()].view_as(weight).to(weight.dtype)
        start += weight.numel()
    return masks


class _KeepZeros(KeepMasked):
    """Keeps a layer's cut weights zero in training and in its ``state_dict``.

    Without a mask (a replayed model, before its weights are loaded) the mask is taken from the
    weights' zeros at the first forward pass after each ``load_state_dict``.
    """

    def __init__(self, mask: torch.Tensor | None) -> None:
        super().__init__({} if mask is None else {"weight": mask})
        self.from_zeros = mask is None

    def __call__(self, module: nn.Module, args: object) -> None:
        if not self.masks:
            self.masks["weight"] = (module.weight != 0).to(module.weight.dtype)
        super().__call__(module, args)

    def forget(self, module: nn.Module, incompatible_keys: object) -> None:
        if self.from_zeros:
            self.masks.clear()

    def attach(self, module: nn.Module) -> None:
        super().attach(module)
        module.register_load_state_dict_post_hook(self.forget)


def _layer_ratios(model: nn.Module, example_input: torch.Tensor, plan: StudentPlan) -> dict[str, float]:
    """The producer layers of groups that ``plan.ratios`` names, with their group's ratio."""
    if not plan.ratios:
        return {}
    groups = find_groups(model, example_input)
    ratios = group_ratios(groups, plan)
    named = {group.name for group in groups if set(group.layer_names) & set(plan.ratios)}
    return {layer: ratios[g.name] for g in groups if g.name in named for layer in g.layer_names}


class MagnitudePruner(Pruner):
    """Zero the smallest weights model-wide (unstructured sparsity: smaller files when compressed, no dense speed-up).

    ``plan.ratio`` of all conv and linear weights with the smallest ``|w|``, ranked across the
    model, are zeroed and kept zero in training. A layer whose group ``plan.ratios`` names loses
    that share of its own smallest weights instead. The output layers (classifier, auxiliary heads) are never cut, and no layer
    loses more than 99% of its weights. ``round_to`` does not apply; a MACs target is refused.
    """

    Config = EmptyConfig

    def __init__(self, config: EmptyConfig) -> None:
        self.config = config

    def check(self, plan: StudentPlan) -> None:
        if plan.macs_target is not None:
            raise UsageError(
                "the magnitude pruner leaves MACs unchanged: it takes a ratio, not a MACs target"
            )

    def prune(self, job: PruneJob) -> PruneRecord:
        self.check(job.plan)
        model, example = job.model, job.ctx.example_input
        heads = set(output_layers(model, example))
        own = _layer_ratios(model, example, job.plan)
        layers = {
            name: module
            for name, module in model.named_modules()
            if isinstance(module, _LAYER_TYPES) and name not in heads
        }
        masks = smallest_weights(
            {name: m.weight for name, m in layers.items() if name not in own}, job.plan.ratio
        )
        for name, ratio in own.items():
            masks.update(smallest_weights({name: layers[name].weight}, ratio))
        cut = [name for name in layers if name in masks and not bool(masks[name].all())]
        for name in cut:
            _KeepZeros(masks[name]).attach(layers[name])
        extra = {"sparsity": weight_sparsity(model), "layers": cut}
        return PruneRecord(removed={}, physical=False, extra=extra)

    def replay(self, model: nn.Module, record: PruneRecord, example_input: torch.Tensor) -> None:
        modules = dict(model.named_modules())
        names = [str(name) for name in record.extra.get("layers", [])]
        missing = [n for n in names if not isinstance(modules.get(n), _LAYER_TYPES)]
        if missing:
            raise UsageError(
                f"the magnitude pruning record names layer {missing[0]!r}, which this model does not have"
            )
        for name in names:
            _KeepZeros(None).attach(modules[name])


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_pruner("magnitude", MagnitudePruner)
