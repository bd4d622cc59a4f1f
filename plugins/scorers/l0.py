"""The ``l0`` scorer: how often each channel is non-zero after its activation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from prunetune import hookimpl
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.host.options import EmptyConfig
from prunetune.host.registry import Registry
from prunetune.plugins.scorers._common import channel_dim, eval_mode, require_calibration
from prunetune.structure.groups import ChannelGroup, Member

__all__ = ["L0Scorer", "prunetune_add_components"]


class _Tally:
    """Non-zero counts of one member's ``idxs`` over every call of its layer."""

    def __init__(self, member: Member, positive: bool) -> None:
        self.member = member
        self.positive = positive
        self.active = torch.zeros(len(member.idxs), device=member.module.weight.device)
        self.seen = 0

    def add(self, values: torch.Tensor) -> None:
        dim = channel_dim(self.member.module)
        idx = torch.as_tensor(self.member.idxs, device=values.device)
        x = values.detach().index_select(dim, idx).movedim(dim, 0).flatten(1)
        self.active += (x > 0 if self.positive else x != 0).sum(dim=1)
        self.seen += x.shape[1]

    def pre_hook(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        self.add(args[0])

    def hook(self, module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        self.add(out)

    def fraction(self, size: int) -> torch.Tensor:
        return self.member.per_channel(self.active / self.seen, size, reduce="mean")


class L0Scorer(Scorer):
    """Fraction of non-zero activations per channel over the calibration data.

    The activated output of a group is the input of its consumers, so a forward pre-hook on
    each consumer counts ``input[:, idxs] != 0`` over batch and spatial positions (a linear
    layer after a flatten sees many features per channel: their fractions are averaged). The
    score is the mean over consumers. A group whose consumers never run is scored on its
    producers' outputs after a ReLU (``output > 0``). One forward pass per batch serves every
    group; the model runs in eval mode.
    """

    Config = EmptyConfig
    needs_data = True

    def __init__(self, config: EmptyConfig) -> None:
        self.config = config

    def score_groups(
        self, groups: Sequence[ChannelGroup], ctx: ScoreContext
    ) -> dict[str, torch.Tensor]:
        require_calibration(ctx, "l0")
        tallies: dict[str, tuple[list[_Tally], list[_Tally]]] = {}
        handles: list[RemovableHandle] = []
        try:
            for group in groups:
                consumers = [_Tally(m, positive=False) for m in group.consumers]
                producers = [_Tally(m, positive=True) for m in group.producers]
                tallies[group.name] = (consumers, producers)
                for tally in consumers:
                    handles.append(tally.member.module.register_forward_pre_hook(tally.pre_hook))
                for tally in producers:
                    handles.append(tally.member.module.register_forward_hook(tally.hook))
            with eval_mode(ctx.model), torch.no_grad():
                for x, _ in ctx.calibration:
                    ctx.model(x)
        finally:
            for handle in handles:
                handle.remove()

        scores: dict[str, torch.Tensor] = {}
        for group in groups:
            consumers, producers = tallies[group.name]
            seen = [t for t in consumers if t.seen] or [t for t in producers if t.seen]
            parts = [t.fraction(group.size) for t in seen]
            scores[group.name] = (
                torch.stack(parts).mean(dim=0) if parts else torch.zeros(group.size)
            )
        return scores


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_scorer("l0", L0Scorer)
