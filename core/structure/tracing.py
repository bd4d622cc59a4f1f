"""Torch-Pruning's dependency graph of a model, traced on every output in training mode, and
the layers each of its groups touches (:class:`Member`)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping

from prunetune.structure.outputs import all_outputs, flat_tensors

__all__ = ["NORM_TYPES", "PRODUCER_TYPES", "Member", "traced_groups"]

PRODUCER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


@dataclasses.dataclass
class Member:
    """One layer touched by a group.

    Attributes:
        name: The layer's qualified name in the model.
        module: The layer.
        role: ``"out"`` (a conv or linear whose output channels these are, depthwise convs
            included), ``"norm"`` (a normalisation over them) or ``"in"`` (a layer that takes
            them as input channels).
        idxs: Indices in the layer's own channel dimension.
        root_idxs: The group channel each of ``idxs`` belongs to (a flattened conv output
            feeding a linear layer maps many inputs to one channel).
    """

    name: str
    module: nn.Module
    role: str
    idxs: list[int]
    root_idxs: list[int]

    def per_channel(self, values: torch.Tensor, size: int, reduce: str = "sum") -> torch.Tensor:
        """Fold one value per entry of ``idxs`` onto the group's ``size`` channels."""
        out = torch.zeros(size, dtype=values.dtype, device=values.device)
        index = torch.as_tensor(self.root_idxs, device=values.device)
        out.index_add_(0, index, values)
        if reduce == "mean":
            counts = torch.zeros(size, dtype=values.dtype, device=values.device)
            counts.index_add_(0, index, torch.ones_like(values))
            out = out / counts.clamp(min=1)
        return out


def _role(graph: tp.DependencyGraph, module: object, handler: object) -> str | None:
    if isinstance(module, NORM_TYPES):
        return "norm"
    if not isinstance(module, PRODUCER_TYPES):
        return None
    if graph.is_out_channel_pruning_fn(handler):
        return "out"
    if graph.is_in_channel_pruning_fn(handler):
        return "in"
    return None


def _train_forward(model: nn.Module, example: torch.Tensor) -> object:
    model.train()
    return model(example)


def _tolerant(update: Callable[..., None]) -> Callable[..., None]:
    def update_reshape_index_mapping(graph: tp.DependencyGraph, node: object) -> None:
        try:
            update(graph, node)
        except ZeroDivisionError:
            pass

    update_reshape_index_mapping.tolerant = True  # type: ignore[attr-defined]
    return update_reshape_index_mapping


# Torch-Pruning's reshape handling divides by a channel count it infers as 0 around some reshapes
# (ShuffleNetV2's), failing every trace and every group it builds. Made tolerant once, for the
# process: such a reshape is left without an index mapping, and the groups through it then fail
# the checks of whole_reason and are left whole, with a warning.
if not getattr(index_mapping.update_reshape_index_mapping, "tolerant", False):
    index_mapping.update_reshape_index_mapping = _tolerant(index_mapping.update_reshape_index_mapping)


def _trace(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """The model's dependency graph, traced on every output it has in training mode (where
    auxiliary heads run), its BatchNorm statistics and mode left as they were."""
    was_training = model.training
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    # Two samples: a training-mode BatchNorm over a single value per channel raises.
    example = torch.cat([example_input[:1], example_input[:1]])
    try:
        with all_outputs(model), torch.enable_grad():
            # Torch-Pruning traces in eval mode; the forward function it calls sets training mode back.
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, forward_fn=_train_forward,
                                                         output_transform=flat_tensors)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _all_groups(graph: tp.DependencyGraph, names: dict[nn.Module, str]) -> Iterator[object]:
    """Torch-Pruning's groups rooted at each conv or linear layer's output channels, as its
    ``get_all_groups`` yields them, but a layer whose group it fails to build (its index
    mappings break around some reshapes) is left whole with a warning instead of failing all."""
    visited: set[nn.Module] = set()
    for module in list(graph.module2node):
        if not isinstance(module, PRODUCER_TYPES) or module in visited or module in graph.IGNORED_LAYERS_IN_TRACING:
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        try:
            group = graph.get_pruning_group(module, pruner.prune_out_channels,
                                            list(range(pruner.get_out_channels(module))))
        except (IndexError, ValueError, ZeroDivisionError, KeyError) as exc:
            warnings.warn(f"group {names.get(module, '?')!r} is left whole: Torch-Pruning cannot follow its "
                          f"channels ({type(exc).__name__} in its index mapping)", RuntimeWarning, stacklevel=3)
            continue
        visited.update(dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler))
        yield group


def traced_groups(model: nn.Module, example_input: torch.Tensor
                   ) -> tuple[tp.DependencyGraph, list[tuple[object, list[Member]]]]:
    """The dependency graph and each of its groups with the members prunetune knows."""
    graph = _trace(model, example_input)
    names = {module: name for name, module in model.named_modules()}
    traced: list[tuple[object, list[Member]]] = []
    for tp_group in _all_groups(graph, names):
        members = [
            Member(names[item.dep.target.module], item.dep.target.module, role, list(item.idxs), list(item.root_idxs))
            for item in tp_group
            if (role := _role(graph, item.dep.target.module, item.dep.handler)) is not None
            and item.dep.target.module in names
        ]
        traced.append((tp_group, members))
    return graph, traced
