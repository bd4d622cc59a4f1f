"""The ``mask`` pruner: zero the chosen channels' kernels instead of removing them.

This is the design notes' "parameterized pruning": the architecture stays the teacher's and the
cut kernels stay zero through training, so the result reports sparsity, not a dense speed-up.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from prunetune import hookimpl
from prunetune.components.pruning import PruneJob, Pruner, PruneRecord, recorded_groups
from prunetune.components.selection import select_channels
from prunetune.host.options import EmptyConfig
from prunetune.host.registry import Registry
from prunetune.structure.groups import ChannelGroup
from prunetune.structure.masking import KeepMasked

__all__ = ["MaskPruner"]


def _mask_group(group: ChannelGroup, channels: Sequence[int]) -> None:
    cut = set(channels)
    for member in group.producers + group.norms:
        idxs = [i for i, root in zip(member.idxs, member.root_idxs) if root in cut]
        if not idxs:
            continue
        masks: dict[str, torch.Tensor] = {}
        for attr in ("weight", "bias"):
            param = getattr(member.module, attr, None)
            if isinstance(param, torch.Tensor):
                mask = torch.ones(param.shape[0], dtype=param.dtype, device=param.device)
                mask[idxs] = 0
                masks[attr] = mask.view(-1, *([1] * (param.dim() - 1)))
        KeepMasked(masks).attach(member.module)


class MaskPruner(Pruner):
    """Zero the lowest-scoring channels' kernels (kept zero in training); reports sparsity."""

    Config = EmptyConfig

    def __init__(self, config: EmptyConfig) -> None:
        self.config = config

    def prune(self, job: PruneJob) -> PruneRecord:
        if job.plan.macs_target is not None:
            # Taken (the zeroed channels are those a channel pruner would remove), but said: a user
            # reading --macs-target 0.25 would expect a quarter of the dense MACs.
            warnings.warn(f"the mask pruner zeroes channels: --macs-target {job.plan.macs_target} counts them "
                          "as gone, while the student's dense MACs stay the teacher's", RuntimeWarning, stacklevel=2)
        groups, removals = select_channels(job)
        by_name = {group.name: group for group in groups}
        for name, channels in removals.items():
            _mask_group(by_name[name], channels)
        return PruneRecord(removed=removals, physical=False)

    def replay(self, model: nn.Module, record: PruneRecord, example_input: torch.Tensor) -> None:
        for group, channels in recorded_groups(model, record, example_input):
            _mask_group(group, channels)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_pruner("mask", MaskPruner)
