"""The ``taylor`` scorer: first-order Taylor estimate of the loss change of removing a channel."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunetune import hookimpl
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.host.options import EmptyConfig
from prunetune.host.registry import Registry
from prunetune.plugins.scorers._common import eval_mode, require_calibration
from prunetune.structure.groups import ChannelGroup, Member

__all__ = ["TaylorScorer", "prunetune_add_components"]


class TaylorScorer(Scorer):
    """First-order Taylor importance |sum w * dL/dw| per channel (Molchanov et al., 2019).

    For each calibration batch, ``L`` is the cross-entropy of the model's output against the
    labels; a channel's term is ``sum w * dL/dw`` over its producers' output-channel weights
    and biases and its normalisation layers' weights and biases. The score is the mean of the
    term's absolute value over the batches. The model runs in eval mode; gradients come from
    :func:`torch.autograd.grad`, so no ``.grad`` is written, and ``requires_grad`` is restored.
    """

    Config = EmptyConfig
    needs_data = True

    def __init__(self, config: EmptyConfig) -> None:
        self.config = config

    def score_groups(
        self, groups: Sequence[ChannelGroup], ctx: ScoreContext
    ) -> dict[str, torch.Tensor]:
        require_calibration(ctx, "taylor")
        params: dict[int, nn.Parameter] = {}
        for group in groups:
            for member in group.producers + group.norms:
                for param in _params(member):
                    params[id(param)] = param
        order = list(params.values())
        was = [param.requires_grad for param in order]
        totals = {group.name: torch.zeros(group.size, dtype=torch.float64) for group in groups}
        try:
            for param in order:
                param.requires_grad_(True)
            with eval_mode(ctx.model), torch.enable_grad():
                for x, y in ctx.calibration if order else ():
                    loss = F.cross_entropy(ctx.model(x), y)
                    grads = torch.autograd.grad(loss, order, allow_unused=True)
                    found = {id(p): g for p, g in zip(order, grads, strict=True) if g is not None}
                    for group in groups:
                        totals[group.name] += _term(group, found).abs().double().cpu()
        finally:
            for param, flag in zip(order, was, strict=True):
                param.requires_grad_(flag)
        device = ctx.example_input.device
        return {
            name: (total / len(ctx.calibration)).float().to(device)
            for name, total in totals.items()
        }


def _params(member: Member) -> list[nn.Parameter]:
    return [
        param
        for param in (getattr(member.module, "weight", None), getattr(member.module, "bias", None))
        if isinstance(param, nn.Parameter)
    ]


def _term(group: ChannelGroup, grads: dict[int, torch.Tensor]) -> torch.Tensor:
    """``sum w * dL/dw`` per channel of ``group`` for one batch."""
    term = torch.zeros(group.size, dtype=torch.float64)
    for member in group.producers + group.norms:
        for param in _params(member):
            grad = grads.get(id(param))
            if grad is None:
                continue
            idx = torch.as_tensor(member.idxs, device=param.device)
            rows = (param.detach() * grad).index_select(0, idx).reshape(len(idx), -1).sum(dim=1)
            term += member.per_channel(rows.double().cpu(), group.size)
    return term


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_scorer("taylor", TaylorScorer)
