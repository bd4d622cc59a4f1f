"""Global ranking: every channel of every group on one scale, cut down to a MACs target.

Local ranking (:func:`prunetune.components.selection.choose_removals`) cuts each group by its own ratio.
Global ranking ranks the channels of all groups together and cuts the lowest-ranked ones
until the model's MACs are at most ``plan.macs_target`` of what they were, so the groups whose
channels matter least lose the most.

Scale: a scorer's numbers mean different things in different groups (an L1 norm grows with
the fan-in of the layers that make a channel), so each group's scores are divided by the mean
of their absolute values: every group's average channel scores 1. The mean, not the L2 norm,
because dividing by the L2 norm shrinks the scores of a large group by the square root of its
size and would make its channels look less important only because there are more of them.
Scorers whose scores are already on one scale across groups (a ``comparable = True`` class
attribute, as ``flops`` scores, importance per MAC in units of the model's average channel)
are ranked on their own numbers: normalising them would cancel the cost that tells the groups
apart.

Cost: MACs are counted on a pruned copy of the model (Torch-Pruning's op counter), not
estimated, because the cost of a channel depends on what else goes (a conv's MACs fall with
both its input and its output channels). The number ``k`` of lowest-ranked channels to cut is
found by bisection, since the MACs only fall as ``k`` grows.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from prunetune.structure.groups import ChannelGroup, find_groups
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan

__all__ = [
    "CutCounter",
    "global_removals",
    "min_kept",
    "normalise_scores",
    "rank_channels",
    "segment_cuts",
]


def normalise_scores(scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each group's scores divided by the mean of their absolute values (all-zero ones kept).

    Returned as float64 on the CPU; the order within a group is unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    for name, values in scores.items():
        values = values.detach().double().cpu()
        scale = values.abs().mean() if values.numel() else torch.tensor(0.0)
        out[name] = values / scale if scale > 0 else values
    return out


def rank_channels(
    groups: Sequence[ChannelGroup], scores: Mapping[str, torch.Tensor]
) -> list[tuple[str, int]]:
    """Every channel of ``groups`` as ``(group name, channel)``, lowest score first.

    Ties go by the order of ``groups``, then by channel index, as local ranking breaks them.

    Raises:
        ValueError: a group's scores do not have one value per channel.
    """
    for group in groups:
        if tuple(scores[group.name].shape) != (group.size,):
            shape = tuple(scores[group.name].shape)
            raise ValueError(f"scores for group {group.name!r} have shape {shape}, expected ({group.size},)")
    if not groups:
        return []
    values = torch.cat([scores[group.name].detach().double().cpu() for group in groups])
    index = [(group.name, channel) for group in groups for channel in range(group.size)]
    return [index[i] for i in torch.argsort(values, stable=True).tolist()]


def min_kept(size: int, max_ratio: float, round_to: int | None) -> int:
    """The fewest channels global ranking leaves a segment of ``size``.

    At least ``size - floor(max_ratio * size)`` and at least one, raised to a multiple of
    ``round_to``; all of them when no multiple of ``round_to`` fits.
    """
    keep = max(1, size - math.floor(max_ratio * size + 1e-9))
    if round_to and round_to > 1:
        keep = round_to * math.ceil(keep / round_to)
    return min(size, keep)


def _rounded_up(size: int, kept: int, round_to: int | None) -> int:
    # Rounding the kept count up (never cutting more than the ranking chose) keeps the cut
    # monotone in k, which the bisection relies on.
    if round_to and round_to > 1 and kept < size:
        kept = round_to * math.ceil(kept / round_to)
    return min(size, kept)


def segment_cuts(
    groups: Sequence[ChannelGroup], removals: Mapping[str, Sequence[int]]
) -> dict[str, list[int]]:
    """How many channels ``removals`` cuts from each segment, per group name."""
    by_name = {group.name: group for group in groups}
    cuts: dict[str, list[int]] = {}
    for name, channels in removals.items():
        gone = set(channels)
        cuts[name] = [sum(c in gone for c in segment) for segment in by_name[name].segments]
    return cuts


class CutCounter:
    """MACs of ``model`` with a number of channels cut from each segment of its groups.

    Which channels go does not change the count, so the first ones of each segment are cut on
    a copy, which is then counted. Counts are memoised; ``model`` is left untouched.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor) -> None:
        self.model = model
        self.example_input = example_input[:1]
        self._counts: dict[tuple[tuple[str, tuple[int, ...]], ...], int] = {}

    def macs(self, cuts: Mapping[str, Sequence[int]]) -> int:
        """MACs per input with ``cuts[name][i]`` channels cut from segment ``i`` of group ``name``.

        Groups left out of ``cuts`` keep every channel.
        """
        key = tuple(sorted((name, tuple(n)) for name, n in cuts.items() if any(n)))
        if key not in self._counts:
            pruned = copy.deepcopy(self.model)
            by_name = {group.name: group for group in find_groups(pruned, self.example_input)}
            for name, per_segment in key:
                segments = by_name[name].segments
                by_name[name].remove([c for seg, n in zip(segments, per_segment, strict=True) for c in seg[:n]])
            self._counts[key], _ = count_macs_params(pruned, tuple(self.example_input.shape[1:]))
        return self._counts[key]

    @property
    def base(self) -> int:
        """MACs of the uncut model."""
        return self.macs({})


class _Cutter:
    """The removals of "the ``k`` lowest-ranked channels", within each segment's limits."""

    def __init__(self, groups: Sequence[ChannelGroup], ranked: list[tuple[str, int]], plan: StudentPlan,
                 scores: Mapping[str, torch.Tensor] | None = None) -> None:
        self.ranked = ranked
        self.groups = {group.name: group for group in groups}
        self.scores = dict(scores or {})
        self.round_to = plan.round_to
        self.segment_of = {
            group.name: {c: i for i, segment in enumerate(group.segments) for c in segment} for group in groups
        }
        self.sizes = {group.name: [len(segment) for segment in group.segments] for group in groups}
        self.floors = {
            name: [min_kept(size, plan.max_ratio, plan.round_to) for size in sizes]
            for name, sizes in self.sizes.items()
        }

    def removals(self, k: int) -> dict[str, list[int]]:
        taken: dict[tuple[str, int], list[int]] = {}
        for name, channel in self.ranked[:k]:
            taken.setdefault((name, self.segment_of[name][channel]), []).append(channel)
        removals: dict[str, list[int]] = {}
        for (name, segment), channels in taken.items():
            size, floor = self.sizes[name][segment], self.floors[name][segment]
            kept = _rounded_up(size, max(size - len(channels), floor), self.round_to)
            if size - kept > 0:
                removals.setdefault(name, []).extend(channels[: size - kept])
        return {name: self.groups[name].patterned(channels, self.scores.get(name))
                for name, channels in removals.items()}


def _smallest_fit(n: int, fits: Callable[[int], bool]) -> int | None:
    """The smallest ``k`` in ``[0, n]`` with ``fits(k)``, for a monotone ``fits``; None if none."""
    if not fits(n):
        return None
    low, high = 0, n
    while low < high:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    return low


def global_removals(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    model: nn.Module,
    example_input: torch.Tensor,
    plan: StudentPlan,
    *,
    normalise: bool = True,
    counter: CutCounter | None = None,
) -> dict[str, list[int]]:
    """Channels to remove per group name: the fewest lowest-ranked channels of all groups
    together that bring ``model``'s MACs to at most ``plan.macs_target`` of what they are.

    No segment loses more than ``plan.max_ratio`` of its channels or all of them, and each
    keeps a multiple of ``plan.round_to`` where one fits (counts are rounded up: a segment
    never loses more than the ranking chose). When even the most the limits allow does not
    reach the target, that most is returned, with a warning.

    Args:
        groups: ``model``'s groups, from :func:`prunetune.structure.groups.find_groups`.
        scores: One score per channel of every group, by group name (higher means keep).
        model: The model the groups belong to; left untouched.
        example_input: An input batch for the model (only its first item is used).
        plan: ``macs_target``, ``max_ratio`` and ``round_to``; ratios are ignored.
        normalise: Divide each group's scores by their mean absolute value first (see the
            module docstring); False for scores already comparable across groups.
        counter: A :class:`CutCounter` of ``model`` to reuse (one is made when None).

    Raises:
        ValueError: ``plan.macs_target`` is None, or a group's scores have the wrong shape.
    """
    if plan.macs_target is None:
        raise ValueError("global ranking needs a plan with a MACs target")
    chosen = {group.name: scores[group.name] for group in groups}
    ranked = rank_channels(groups, normalise_scores(chosen) if normalise else chosen)
    counter = counter or CutCounter(model, example_input)
    budget = plan.macs_target * counter.base
    cutter = _Cutter(groups, ranked, plan, chosen)

    def fits(k: int) -> bool:
        return counter.macs(segment_cuts(groups, cutter.removals(k))) <= budget

    k = _smallest_fit(len(ranked), fits)
    if k is None:
        warnings.warn(
            f"the MACs target {plan.macs_target} is out of reach with max_ratio {plan.max_ratio}: "
            "every group is cut as far as it may be",
            RuntimeWarning,
            stacklevel=2,
        )
        k = len(ranked)
    return cutter.removals(k)
