"""What a correct cut of a group must respect: its concatenated branches (segments), the equal
blocks of grouped convs and GroupNorms, channels tied across branches, and the groups no cut
fits at all (:func:`whole_reason`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch_pruning as tp
from torch import nn

from prunetune.structure.tracing import Member

__all__ = ["blocks_of", "feeds_output", "partly_covered", "segments_of", "ties_of", "whole_reason"]


def segments_of(size: int, producers: list[Member]) -> list[list[int]]:
    """A partition of ``range(size)``: channels made by the same producers fall together (one
    segment per concatenated branch, one in all where no concat feeds the group)."""
    cover: dict[int, set[int]] = {c: set() for c in range(size)}
    for i, member in enumerate(producers):
        for root in member.root_idxs:
            cover[root].add(i)
    by_signature: dict[frozenset[int], list[int]] = {}
    for channel in range(size):
        by_signature.setdefault(frozenset(cover[channel]), []).append(channel)
    return sorted(by_signature.values(), key=lambda seg: seg[0])


def blocks_of(member: Member, size: int) -> int | None:
    """The equal blocks ``member`` splits the group into (1: none); None where they do not
    line up with the group's channels (the member sees only some of them, or in another order)."""
    module = member.module
    if isinstance(module, nn.GroupNorm):
        blocks = module.num_groups
    elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.groups > 1:
        if module.groups == module.in_channels and member.role == "out" or module.groups == module.out_channels:
            return 1  # depthwise: each channel its own block, cut one by one
        blocks = module.groups
    else:
        return 1
    if blocks == 1:
        return 1
    if len(member.idxs) != size or member.idxs != member.root_idxs:
        return None
    return blocks


def _channels(member: Member) -> int | None:
    """How many output channels a producer ``member`` has (None: not known here)."""
    return getattr(member.module, "out_channels", getattr(member.module, "out_features", None))


def feeds_output(members: list[Member]) -> bool:
    """Whether a group's channels are a model output's: no layer takes them as input."""
    return not any(m.role == "in" for m in members)


def partly_covered(traced: Iterable[list[Member]]) -> set[str]:
    """Layers whose input channels the groups cover in part: some come from a group, others
    from none (a slice after a concatenation, which Torch-Pruning does not follow). A layer fed
    by the model's input is covered by no group at all, and is not one of them."""
    covered: dict[str, set[int]] = {}
    width: dict[str, int] = {}
    for members in traced:
        for m in members:
            if m.role == "in":
                covered.setdefault(m.name, set()).update(m.idxs)
                width[m.name] = getattr(m.module, "in_channels", getattr(m.module, "in_features", 0))
    return {name for name, idxs in covered.items() if idxs and len(idxs) < width[name]}


def whole_reason(members: list[Member], segments: list[list[int]], blocks: list[int | None],
                 partial: set[str] | frozenset[str] = frozenset()) -> str | None:
    """Why no correct cut fits a group, or None when one does."""
    split = [m.name for m in members if m.role == "out" and _channels(m) not in (None, len(set(m.idxs)))]
    if split:
        # A producer's channels must all be in its group (a norm's need not: one after a concat
        # spans several); Torch-Pruning loses track of them through reshapes such as a channel
        # shuffle's view and transpose.
        return f"its channels pass through a reshape Torch-Pruning cannot follow (at {', '.join(split)})"
    sliced = [m.name for m in members if m.role == "in" and m.name in partial]
    if sliced:
        return f"its channels reach {', '.join(sliced)} through a slice Torch-Pruning cannot follow"
    if None in blocks or (len(segments) > 1 and max(b or 1 for b in blocks) > 1):
        return "a grouped conv or GroupNorm sees its channels in an order no equal cut per group fits"
    return None


def ties_of(graph: tp.DependencyGraph, root: nn.Module, root_fn: object,
            segments: list[list[int]]) -> list[list[int]] | None:
    """The tie sets of a group fed by a concat (see :attr:`ChannelGroup.ties`): [] where every
    channel goes alone, None where the ties differ along a segment or overlap (no cut rule fits
    them).

    Torch-Pruning, asked to cut one channel, returns every channel the cut takes with it; the
    first and the last channel of each segment are asked, and their partners must lie at the
    same offsets.
    """
    def partners(channel: int) -> list[int]:
        group = graph.get_pruning_group(root, root_fn, [channel])
        return sorted({int(i) for i in group[0].idxs})

    offsets: dict[int, list[int]] = {}
    for segment in segments:
        first, last = partners(segment[0]), partners(segment[-1])
        if [c - segment[0] for c in first] != [c - segment[-1] for c in last]:
            return None
        for channel in segment:
            offsets[channel] = [channel + c - segment[0] for c in first]
    if all(len(p) == 1 for p in offsets.values()):
        return []
    ties = {frozenset(together) for together in offsets.values()}
    if sum(map(len, ties)) != len(offsets):  # overlapping sets: no whole-set cut fits them
        return None
    return sorted(sorted(t) for t in ties)
