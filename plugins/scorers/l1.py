"""The ``l1`` scorer: L1 norm of the weights that make each channel."""

from __future__ import annotations

import dataclasses

import torch

from prunetune import hookimpl
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.host.registry import Registry
from prunetune.plugins.scorers._common import magnitude
from prunetune.structure.groups import ChannelGroup

__all__ = ["L1Scorer", "prunetune_add_components"]


class L1Scorer(Scorer):
    """L1 norm of each channel's weights, summed over every layer that makes it.

    A channel's score is ``sum |w|`` over the output-channel weights and bias of every producer
    in the group (residual and concatenated branches included). Consumers' input weights count
    only with ``include_inputs=true`` (Torch-Pruning's ``GroupMagnitudeImportance`` always
    counts them); normalisation layers never count (see the ``bn_scale`` scorer).
    """

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``l1`` scorer.

        Attributes:
            include_inputs: Also count the next layers' weights that read each channel.
        """

        include_inputs: bool = False

    def __init__(self, config: Config) -> None:
        self.config = config

    def score(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        return magnitude(group, 1, self.config.include_inputs)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_scorer("l1", L1Scorer)
