"""Coupled channel groups of a model, found with Torch-Pruning's DependencyGraph.

A group is a set of channels that must be cut together: a conv's outputs, its BatchNorm, the
next layers' inputs, and everything tied to them by residual adds, concatenations and
depthwise convs. Channels are numbered in the group's own index space ("root" indices).
Where concatenated branches feed the group, the channels fall into *segments* (one per
branch), so each branch can be cut by its own share. Where a grouped conv (``groups > 1``, not
depthwise) or a GroupNorm touches the group, its channels fall into equal *blocks* as well, and
every block must lose the same positions (:meth:`ChannelGroup.patterned`): a grouped conv keeps
one weight slice per block.

Groups that feed a model output directly (a classifier, an auxiliary head: their channels are
the output's) are not groups to cut, nor are those of the layers a model names as heads
(:func:`prunetune.structure.outputs.select_output`). Groups whose structure no correct cut
fits are left whole with a warning of one line.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from prunetune.structure.constraints import (
    blocks_of,
    feeds_output,
    partly_covered,
    segments_of,
    ties_of,
    whole_reason,
)
from prunetune.structure.outputs import heads_of
from prunetune.structure.tracing import Member, traced_groups

__all__ = ["ChannelGroup", "Member", "find_groups", "output_layers"]


@dataclasses.dataclass
class ChannelGroup:
    """Channels that are cut together.

    Attributes:
        name: Stable name: the qualified name of the group's first producer in module order.
        size: Number of channels.
        members: Every layer the group touches.
        segments: A partition of ``range(size)``: one list per concatenated branch, or a
            single list when no concatenation feeds the group.
        blocks: How many equal blocks of consecutive channels must lose the same positions
            (grouped convs and GroupNorms among the members); 1 where any cut will do.
        ties: Sets of channels that go together, one set per channel (none where every channel
            goes alone): a concat of a conv and a depthwise conv of it (GhostNet) ties channel
            ``i`` of both branches, and cutting either cuts both.
    """

    name: str
    size: int
    members: list[Member]
    segments: list[list[int]]
    _graph: tp.DependencyGraph = dataclasses.field(repr=False)
    _root: nn.Module = dataclasses.field(repr=False)
    _root_fn: object = dataclasses.field(repr=False)
    blocks: int = 1
    ties: list[list[int]] = dataclasses.field(default_factory=list)

    @property
    def producers(self) -> list[Member]:
        return [m for m in self.members if m.role == "out"]

    @property
    def norms(self) -> list[Member]:
        return [m for m in self.members if m.role == "norm"]

    @property
    def consumers(self) -> list[Member]:
        return [m for m in self.members if m.role == "in"]

    @property
    def layer_names(self) -> list[str]:
        """Names a plan may use for this group: every producer's."""
        return [m.name for m in self.producers]

    def patterned(self, channels: Sequence[int], scores: torch.Tensor | None = None) -> list[int]:
        """``channels`` made a cut this group can take.

        With :attr:`ties`: whole tie sets, about as many channels (the lowest mean ``scores``,
        at least one set kept), or, without scores, every set ``channels`` touches (what
        cutting them cuts). With :attr:`blocks`: as many channels (to the nearest multiple of
        ``blocks``), the same positions in every block, at least one position kept: those with
        the lowest mean ``scores`` over the blocks, or, without scores, those ``channels`` hit
        most. Unchanged where neither applies."""
        if self.ties and channels:
            return self._tied(channels, scores)
        if self.blocks == 1 or not channels:
            return sorted(channels)
        block = self.size // self.blocks
        per_block = min(block - 1, round(len(channels) / self.blocks))
        if scores is not None:
            rank = scores.detach().double().cpu().view(self.blocks, block).mean(0)
        else:
            rank = -torch.bincount(torch.as_tensor([c % block for c in channels]), minlength=block).double()
        positions = torch.argsort(rank, stable=True)[:per_block].tolist()
        return sorted(b * block + p for b in range(self.blocks) for p in positions)

    def _tied(self, channels: Sequence[int], scores: torch.Tensor | None) -> list[int]:
        if scores is None:
            cut = set(channels)
            return sorted(c for tie in self.ties if cut.intersection(tie) for c in tie)
        values = scores.detach().double().cpu()
        ranked = sorted(self.ties, key=lambda tie: (float(values[tie].mean()), tie[0]))
        chosen: list[int] = []
        for tie in ranked[:-1]:  # one set at least stays
            if len(chosen) + len(tie) / 2 > len(channels):
                break
            chosen.extend(tie)
        return sorted(chosen)

    def remove(self, channels: Sequence[int]) -> None:
        """Physically remove ``channels`` (root indices) from every member, made a cut the
        group can take first (:meth:`patterned`)."""
        channels = self.patterned(channels)
        if not channels:
            return
        group = self._graph.get_pruning_group(self._root, self._root_fn, sorted(channels))
        group.prune()


def output_layers(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """The conv and linear layers whose channels are a model output's (classifiers, auxiliary
    heads: no layer takes them as input), and the heads the model names; in module order."""
    _, traced = traced_groups(model, example_input)
    found = {m.name for _, members in traced if feeds_output(members) for m in members if m.role == "out"}
    found |= set(heads_of(model))
    return [name for name, _ in model.named_modules() if name in found]


def find_groups(
    model: nn.Module,
    example_input: torch.Tensor,
    ignore: Sequence[str] = (),
) -> list[ChannelGroup]:
    """Every prunable channel group of ``model``, in module order.

    Left out: groups that feed a model output directly (no layer takes their channels as
    input: classifiers, auxiliary heads), those of the model's named heads, those touching a
    layer named in ``ignore`` (as a producer), and those no correct cut fits (with a warning).
    Groups hold a live DependencyGraph: call :meth:`ChannelGroup.remove` on groups of one
    :func:`find_groups` call, and call it again after changing the model in any other way.
    """
    graph, traced = traced_groups(model, example_input)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    skip = set(ignore) | set(heads_of(model))
    partial = partly_covered(members for _, members in traced)

    groups: list[ChannelGroup] = []
    for tp_group, members in traced:
        root_dep = tp_group[0].dep  # type: ignore[index]
        root = root_dep.target.module
        producers = [m for m in members if m.role == "out"]
        if not producers or any(m.name in skip for m in producers):
            continue
        if feeds_output(members):
            continue
        size = len(tp_group[0].idxs)  # type: ignore[index]
        first = min(producers, key=lambda m: order[m.name])
        segments = segments_of(size, producers)
        blocks = [blocks_of(m, size) for m in members]
        reason = whole_reason(members, segments, blocks, partial)
        ties = ties_of(graph, root, root_dep.handler, segments) if reason is None and len(segments) > 1 else []
        if ties is None:
            reason = "its concatenated branches are tied in a way no cut of whole branches' channels fits"
        if reason is not None:
            warnings.warn(f"group {first.name!r} is left whole: {reason}", RuntimeWarning, stacklevel=2)
            continue
        groups.append(
            ChannelGroup(
                name=first.name,
                size=size,
                members=members,
                segments=segments,
                _graph=graph,
                _root=root,
                _root_fn=root_dep.handler,
                blocks=math.lcm(*(b or 1 for b in blocks)),
                ties=ties or [],
            )
        )
    groups.sort(key=lambda g: order[g.name])
    return groups
