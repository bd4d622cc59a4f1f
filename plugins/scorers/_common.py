"""Helpers shared by the built-in scorers: weight slices, magnitudes, a safe eval mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from prunetune.components.scoring import ScoreContext
from prunetune.errors import UsageError
from prunetune.structure.groups import ChannelGroup, Member

__all__ = [
    "channel_dim",
    "eval_mode",
    "input_weights",
    "magnitude",
    "output_weights",
    "require_calibration",
]


def channel_dim(module: nn.Module) -> int:
    """The channel dimension of a layer's input and output: last for linear layers, else 1."""
    return -1 if isinstance(module, nn.Linear) else 1


def output_weights(member: Member) -> torch.Tensor:
    """The parameters that make each of a producer's ``idxs``: one row per idx, bias last."""
    module = member.module
    weight = module.weight.detach()
    idx = torch.as_tensor(member.idxs, device=weight.device)
    rows = weight.index_select(0, idx).flatten(1)
    bias = getattr(module, "bias", None)
    if bias is not None:
        rows = torch.cat([rows, bias.detach().index_select(0, idx).unsqueeze(1)], dim=1)
    return rows


def input_weights(member: Member) -> torch.Tensor:
    """The weights that read each of a consumer's input ``idxs``: one row per idx."""
    module = member.module
    weight = module.weight.detach()
    idx = torch.as_tensor(member.idxs, device=weight.device)
    if isinstance(module, nn.Linear):
        return weight.index_select(1, idx).t()
    groups = getattr(module, "groups", 1)
    in_per, out_per = weight.shape[1], weight.shape[0] // groups
    # In a grouped conv, input channel i is read only by the output channels of its own group.
    by_group = weight.reshape(groups, out_per, in_per, -1)
    return by_group[idx // in_per, :, idx % in_per].flatten(1)


def magnitude(group: ChannelGroup, p: int, include_inputs: bool = False) -> torch.Tensor:
    """Per-channel Lp norm of the weights that make (and optionally read) each channel.

    The norm runs over every producer's output-channel weights and bias and, with
    ``include_inputs``, every consumer's input-channel weights; normalisation layers never count.
    """
    members = group.producers + (group.consumers if include_inputs else [])
    total: torch.Tensor | None = None
    for member in members:
        rows = output_weights(member) if member.role == "out" else input_weights(member)
        part = member.per_channel(rows.abs().pow(p).sum(dim=1).float(), group.size)
        total = part if total is None else total + part
    if total is None:
        return torch.zeros(group.size)
    return total.pow(1.0 / p)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode (BatchNorm statistics untouched), then restore every module."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def require_calibration(ctx: ScoreContext, name: str) -> None:
    """Raise a clear error when a data-driven scorer gets no calibration batches."""
    if not ctx.calibration:
        raise UsageError(f"scorer {name!r} needs calibration data, and none was given")
