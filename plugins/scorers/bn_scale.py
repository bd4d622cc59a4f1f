"""The ``bn_scale`` scorer: the magnitude of each channel's BatchNorm scale (network slimming)."""

from __future__ import annotations

import torch

from prunetune import hookimpl
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.host.options import EmptyConfig
from prunetune.host.registry import Registry
from prunetune.plugins.scorers._common import magnitude
from prunetune.structure.groups import ChannelGroup

__all__ = ["BNScaleScorer", "prunetune_add_components"]


class BNScaleScorer(Scorer):
    """|gamma| of each channel's normalisation layers (network slimming, Liu et al., 2017).

    A channel's score is the sum of ``|weight|`` over the group's normalisation layers that
    have a per-channel affine scale (BatchNorm, GroupNorm, LayerNorm over channels). A group
    without one, such as a conv feeding the classifier directly, is scored like ``l1``: the L1
    norm of its producers' weights.
    """

    Config = EmptyConfig

    def __init__(self, config: EmptyConfig) -> None:
        self.config = config

    def score(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        total: torch.Tensor | None = None
        for member in group.norms:
            gamma = getattr(member.module, "weight", None)
            if gamma is None or gamma.dim() != 1:
                continue
            idx = torch.as_tensor(member.idxs, device=gamma.device)
            part = member.per_channel(gamma.detach().index_select(0, idx).abs().float(), group.size)
            total = part if total is None else total + part
        return magnitude(group, 1) if total is None else total


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_scorer("bn_scale", BNScaleScorer)
