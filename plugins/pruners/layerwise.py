"""The ``layerwise`` pruner: cut one coupled group at a time, shallow to deep, retraining between.

This is the design notes' layer-wise pruning (3.3): for each layer in turn, rank its channels
on the model as it is *now* (after the cuts and retraining before it), remove the lowest share,
retrain briefly, go on to the next layer. Choosing per layer is the same local rule the
``channel`` pruner applies; what differs is that later layers are scored on retrained weights.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
from torch import nn
from tqdm import tqdm

from prunetune import hookimpl
from prunetune.components.pruning import PruneJob, Pruner, PruneRecord, recorded_groups
from prunetune.components.selection import choose_removals, group_ratios
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.structure.groups import ChannelGroup, find_groups
from prunetune.structure.plan import StudentPlan

__all__ = ["LayerwisePruner", "prunetune_add_components"]


class LayerwisePruner(Pruner):
    """Cut layer by layer, shallow to deep, re-scoring each layer after retraining the last cut.

    Each group with a ratio above 0 is scored alone on the current model, cut, and followed by
    ``retrain_steps`` steps of the pipeline's brief retraining (where the pipeline offers it).
    Takes per-layer ratios; a plan with a global MACs target is refused.
    """

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``layerwise`` pruner.

        Attributes:
            retrain_steps: Retraining steps after each cut layer (0: none).
            progress: Show a progress bar over the layers on stderr.
        """

        retrain_steps: int = 20
        progress: bool = True

        def __post_init__(self) -> None:
            if self.retrain_steps < 0:
                raise ValueError(f"retrain_steps must be >= 0, got {self.retrain_steps}")

    def __init__(self, config: Config) -> None:
        self.config = config

    def check(self, plan: StudentPlan) -> None:
        if plan.macs_target is not None:
            raise UsageError(
                "the layerwise pruner ranks channels layer by layer and takes per-layer ratios, "
                "not a global MACs target"
            )

    def prune(self, job: PruneJob) -> PruneRecord:
        self.check(job.plan)
        example = job.ctx.example_input
        # Ratios are fixed up front: group names are stable across cuts, the groups are not.
        ratios = group_ratios(find_groups(job.model, example), job.plan)
        todo = [name for name, ratio in ratios.items() if ratio > 0]
        if todo and job.scorer.needs_data and not job.ctx.calibration:
            raise UsageError("this scorer needs calibration data, and none was given")
        was_training = job.model.training
        removed: dict[str, list[int]] = {}
        bar = tqdm(todo, desc="layerwise", unit="layer", file=sys.stderr, disable=not (self.config.progress and sys.stderr.isatty()))
        with bar:
            for name in bar:
                bar.set_postfix_str(name)
                group = _current_group(job.model, example, name)
                ctx = dataclasses.replace(job.ctx, model=job.model)
                scores = job.scorer.score_groups([group], ctx)[name]
                channels = choose_removals(group, scores, ratios[name], job.plan.round_to)
                if not channels:
                    continue
                group.remove(channels)
                removed[name] = channels
                if job.retrain is not None and self.config.retrain_steps > 0:
                    job.retrain(job.model, self.config.retrain_steps)
                    # Retraining leaves train mode; scorers and find_groups expect the caller's.
                    job.model.train(was_training)
        return PruneRecord(removed=removed, physical=True, extra={"order": list(removed)})

    def replay(self, model: nn.Module, record: PruneRecord, example_input: torch.Tensor) -> None:
        # Groups are disjoint, so cutting one leaves the others' channel numbers as they were
        # at cut time (checked on residual and concatenated models): one graph suffices.
        found = {g.name: (g, channels) for g, channels in recorded_groups(model, record, example_input)}
        order = [str(name) for name in record.extra.get("order", list(record.removed))]
        if sorted(order) != sorted(found):
            raise UsageError("the layerwise pruning record's cut order does not match the groups it cut")
        for name in order:
            group, channels = found[name]
            group.remove(channels)


def _current_group(model: nn.Module, example_input: torch.Tensor, name: str) -> ChannelGroup:
    for group in find_groups(model, example_input):
        if group.name == name:
            return group
    raise RuntimeError(f"group {name!r} disappeared while pruning layer by layer")


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_pruner("layerwise", LayerwisePruner)
