"""The ``flops`` scorer: importance per multiply-accumulate a channel costs."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from prunetune import hookimpl
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.host.registry import Registry
from prunetune.plugins.scorers._common import channel_dim, eval_mode, magnitude
from prunetune.structure.groups import ChannelGroup, Member

__all__ = ["FlopsScorer", "prunetune_add_components"]

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BASES = {"l1": 1, "l2": 2}


class FlopsScorer(Scorer):
    """Weight-norm importance divided by the MACs a channel costs: cheap channels stay first.

    For channel ``c`` of a group::

        score_c = (imp_c / mean_g(imp)) / (macs_c / (M / N))
        macs_c  = sum over producers  p of K_p * P_p            (K_p = C_in/groups * k_h * k_w)
                + sum over consumers q of (C_out_q/groups_q) * k_h * k_w * P_q per input idx

    ``imp`` is the ``l1`` (or ``l2``) score, ``mean_g`` its mean over the group, and ``P`` the
    number of output positions of a layer (``H_out * W_out`` for a 2-D conv, 1 for a linear
    layer on flat features), recorded in one forward pass of ``ctx.example_input``. A linear
    consumer after a flatten counts ``out_features`` per feature, summed over the channel's
    features. ``M`` is the MACs of every conv and linear layer of the model and ``N`` their
    output channels, so a cost of 1 is the model's average channel. In a plain conv group every
    channel costs the same and the order is that of ``imp``; costs differ where concatenated
    branches of different kernel sizes share a group, and between groups.
    """

    # Importance over cost in model-wide units: per-group normalising would divide out the cost.
    comparable = True

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``flops`` scorer.

        Attributes:
            base: The importance divided by the cost: ``l1`` or ``l2``.
        """

        base: str = "l1"

        def __post_init__(self) -> None:
            if self.base not in _BASES:
                raise ValueError(f"base must be one of {', '.join(_BASES)}, not {self.base!r}")

    def __init__(self, config: Config) -> None:
        self.config = config

    def score_groups(
        self, groups: Sequence[ChannelGroup], ctx: ScoreContext
    ) -> dict[str, torch.Tensor]:
        positions = _positions(ctx.model, ctx.example_input)
        total = sum(math.prod(_shape(module)) * count for module, count in positions.items())
        channels = sum(_shape(module)[0] for module in positions)
        unit = total / max(channels, 1)
        scores: dict[str, torch.Tensor] = {}
        for group in groups:
            importance = magnitude(group, _BASES[self.config.base])
            mean = importance.mean()
            if mean > 0:
                importance = importance / mean
            cost = sum(
                (_member_macs(m, group.size, positions) for m in group.members),
                torch.zeros(group.size, dtype=torch.float64),
            )
            cost = (cost / unit).clamp(min=1e-12) if unit > 0 else torch.ones(group.size)
            scores[group.name] = (importance.double().cpu() / cost).float().to(importance.device)
        return scores


def _member_macs(member: Member, size: int, positions: dict[nn.Module, int]) -> torch.Tensor:
    """MACs per group channel that ``member`` spends (norm layers: none)."""
    module = member.module
    count = positions.get(module, 0)
    shape = _shape(module)
    if member.role == "out":
        per_idx = math.prod(shape[1:]) * count
    elif member.role == "in":
        per_idx = shape[0] // getattr(module, "groups", 1) * math.prod(shape[2:]) * count
    else:
        return torch.zeros(size, dtype=torch.float64)
    values = torch.full((len(member.idxs),), float(per_idx), dtype=torch.float64)
    return member.per_channel(values, size)


def _shape(module: nn.Module) -> tuple[int, ...]:
    return tuple(cast(torch.Tensor, module.weight).shape)


def _positions(model: nn.Module, example_input: torch.Tensor) -> dict[nn.Module, int]:
    """Output positions per sample of every conv and linear layer, summed over its calls."""
    positions: dict[nn.Module, int] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        per_sample = out.numel() // (out.shape[0] * out.shape[channel_dim(module)])
        positions[module] = positions.get(module, 0) + per_sample

    handles: list[RemovableHandle] = []
    try:
        for module in model.modules():
            if isinstance(module, _LAYERS):
                handles.append(module.register_forward_hook(record))
        with eval_mode(model), torch.no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return positions


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_scorer("flops", FlopsScorer)
