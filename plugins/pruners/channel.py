"""The ``channel`` pruner: physically remove channels of every coupled group."""

from __future__ import annotations

import torch
from torch import nn

from prunetune import hookimpl
from prunetune.components.pruning import PruneJob, Pruner, PruneRecord, recorded_groups
from prunetune.components.selection import select_channels
from prunetune.host.options import EmptyConfig
from prunetune.host.registry import Registry

__all__ = ["ChannelPruner"]


class ChannelPruner(Pruner):
    """Remove the lowest-scoring channels of each coupled group; MACs and latency really fall."""

    Config = EmptyConfig

    def __init__(self, config: EmptyConfig) -> None:
        self.config = config

    def prune(self, job: PruneJob) -> PruneRecord:
        groups, removals = select_channels(job)
        by_name = {group.name: group for group in groups}
        for name, channels in removals.items():
            by_name[name].remove(channels)
        return PruneRecord(removed=removals, physical=True)

    def replay(self, model: nn.Module, record: PruneRecord, example_input: torch.Tensor) -> None:
        for group, channels in recorded_groups(model, record, example_input):
            group.remove(channels)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_pruner("channel", ChannelPruner)
