"""The shared rule from scores and a plan to the channels each group loses.

Local ranking cuts each group by its ratio; a plan with a MACs target is cut by global ranking
(:mod:`prunetune.structure.ranking`) instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from prunetune.errors import UsageError
from prunetune.structure.groups import ChannelGroup, find_groups
from prunetune.structure.plan import StudentPlan
from prunetune.structure.ranking import global_removals

if TYPE_CHECKING:
    from prunetune.components.pruning import PruneJob

__all__ = ["GroupScorer", "choose_removals", "group_ratios", "kept_count", "select_channels"]

#: Scores the groups it is given: one tensor per group name.
GroupScorer = Callable[[Sequence[ChannelGroup]], dict[str, torch.Tensor]]


def group_ratios(groups: Sequence[ChannelGroup], plan: StudentPlan) -> dict[str, float]:
    """The ratio of every group: its own from ``plan.ratios`` (named by any of its producer
    layers), else ``plan.ratio``.

    Raises:
        UsageError: a plan key names no prunable group, or two keys name one group with
            different ratios.
    """
    owner = {layer: group.name for group in groups for layer in group.layer_names}
    ratios = {group.name: plan.ratio for group in groups}
    chosen_by: dict[str, str] = {}
    for key, ratio in plan.ratios.items():
        if key not in owner:
            valid = ", ".join(sorted(g.name for g in groups)) or "none"
            raise UsageError(f"plan names layer {key!r}, which is not a prunable layer (groups: {valid})")
        name = owner[key]
        if name in chosen_by and ratios[name] != ratio:
            raise UsageError(
                f"plan gives group {name!r} two ratios: {ratios[name]} via {chosen_by[name]!r} "
                f"and {ratio} via {key!r}"
            )
        ratios[name], chosen_by[name] = ratio, key
    return ratios


def kept_count(size: int, ratio: float, round_to: int | None) -> int:
    """How many of ``size`` channels stay at ``ratio``: never zero, a multiple of ``round_to``
    where that is possible, all of them at ratio 0."""
    if ratio <= 0 or size <= 1:
        return size
    keep = size - math.floor(ratio * size + 1e-9)
    if round_to and round_to > 1:
        keep = round_to * max(1, round(keep / round_to))
    return int(min(size, max(1, keep)))


def choose_removals(
    group: ChannelGroup, scores: torch.Tensor, ratio: float, round_to: int | None = None
) -> list[int]:
    """The lowest-scoring channels of each segment (concatenated branch), each cut by ``ratio``;
    in a group of equal blocks (grouped convs), the lowest-scoring positions of every block; in
    a group of tied channels, the lowest-scoring tie sets."""
    if scores.shape != (group.size,):
        raise ValueError(f"scores for group {group.name!r} have shape {tuple(scores.shape)}, expected ({group.size},)")
    if group.blocks > 1 or group.ties:
        n_remove = group.size - kept_count(group.size, ratio, round_to)
        return group.patterned(range(n_remove), scores)
    removed: list[int] = []
    for segment in group.segments:
        n_remove = len(segment) - kept_count(len(segment), ratio, round_to)
        if n_remove <= 0:
            continue
        seg_scores = scores[torch.as_tensor(segment)].float()
        order = torch.argsort(seg_scores, stable=True)
        removed.extend(segment[i] for i in order[:n_remove].tolist())
    return sorted(removed)


def select_channels(
    job: PruneJob, score_groups: GroupScorer | None = None
) -> tuple[list[ChannelGroup], dict[str, list[int]]]:
    """Find ``job.model``'s groups, score those the plan may cut, and choose their removals.

    Each group by its ratio (local ranking), or, when ``job.plan.macs_target`` is set, all
    groups ranked together down to the MACs target
    (:func:`prunetune.structure.ranking.global_removals`; scores are normalised per group unless the
    scorer's class sets ``comparable = True``).

    Args:
        job: The model, plan, scorer and scoring context.
        score_groups: Scores the groups to cut; by default ``job.scorer.score_groups`` with
            ``job.ctx`` in this process (the ``distributed`` pruner scores on Ray workers).

    Raises:
        UsageError: the scorer needs calibration data and the job has none, or the plan names
            a layer that is not prunable.
    """
    groups = find_groups(job.model, job.ctx.example_input)
    ranks_globally = job.plan.macs_target is not None
    ratios = {} if ranks_globally else group_ratios(groups, job.plan)
    to_score = groups if ranks_globally else [g for g in groups if ratios[g.name] > 0]
    if not to_score:
        return groups, {}
    if job.scorer.needs_data and not job.ctx.calibration:
        raise UsageError("this scorer needs calibration data, and none was given")
    scores = score_groups(to_score) if score_groups else job.scorer.score_groups(to_score, job.ctx)
    if ranks_globally:
        normalise = not job.scorer.comparable
        return groups, global_removals(
            groups, scores, job.model, job.ctx.example_input, job.plan, normalise=normalise
        )
    removals = {}
    for group in to_score:
        removed = choose_removals(group, scores[group.name], ratios[group.name], job.plan.round_to)
        if removed:
            removals[group.name] = removed
    return groups, removals
