"""A MACs budget relative to the teacher: what a plan's student costs, and plans pushed under it.

Counting needs no scorer and no training: which channels go does not change the counts, so
the first channels of every segment are removed, and the pruned copy is counted.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from prunetune.groups import ChannelGroup, find_groups
from prunetune.kernels import apply_kernels
from prunetune.measure import count_macs_params
from prunetune.plan import StudentPlan
from prunetune.selection import group_ratios, kept_count

__all__ = ["MacsCounter", "RepairResult", "repair", "student_macs"]

# Bisection of the common scale s: at most this many halvings, fewer once the interval is
# narrower than the tolerance (s moves every ratio by at most s * max_ratio, < 1e-3 of a channel
# fraction by then).
_MAX_STEPS = 12
_TOLERANCE = 1e-3


def _remove_first(
    groups: list[ChannelGroup], ratios: dict[str, float], round_to: int | None
) -> None:
    for group in groups:
        ratio = ratios[group.name]
        removed = [
            channel
            for segment in group.segments
            for channel in segment[: len(segment) - kept_count(len(segment), ratio, round_to)]
        ]
        group.remove(removed)


class MacsCounter:
    """Counts the MACs of students of one teacher, for many plans sharing its groups.

    The teacher is copied once per set of kernel sizes, and counts are memoised by the channel
    count every segment keeps, so plans that differ only below one channel cost nothing extra.
    """

    def __init__(self, teacher: nn.Module, example_input: torch.Tensor) -> None:
        self.teacher = teacher
        self.example_input = example_input[:1]
        self._kernel_models: dict[tuple[tuple[str, int], ...], nn.Module] = {}
        self._counts: dict[tuple[object, ...], int] = {}
        self._groups: list[ChannelGroup] | None = None

    def groups(self) -> list[ChannelGroup]:
        """The teacher's groups (kernel sizes change no group, so these hold for every plan)."""
        if self._groups is None:
            self._groups = find_groups(self._with_kernels(StudentPlan())[1], self.example_input)
        return self._groups

    def _with_kernels(self, plan: StudentPlan) -> tuple[tuple[tuple[str, int], ...], nn.Module]:
        key = tuple(sorted(plan.kernels.items()))
        if key not in self._kernel_models:
            model = copy.deepcopy(self.teacher)
            apply_kernels(model, plan.kernels)
            self._kernel_models[key] = model.eval()
        return key, self._kernel_models[key]

    def macs(self, plan: StudentPlan) -> int:
        """MACs of one forward pass of one input through ``plan``'s student.

        Raises:
            UsageError: the plan names a layer that is not in the teacher.
        """
        key, base = self._with_kernels(plan)
        ratios = group_ratios(self.groups(), plan)
        kept = tuple(
            kept_count(len(segment), ratios[group.name], plan.round_to)
            for group in self.groups()
            for segment in group.segments
        )
        if (key, kept) not in self._counts:
            student = copy.deepcopy(base)
            _remove_first(find_groups(student, self.example_input), ratios, plan.round_to)
            macs, _ = count_macs_params(student, tuple(self.example_input.shape[1:]))
            self._counts[(key, kept)] = macs
        return self._counts[(key, kept)]


def student_macs(teacher: nn.Module, plan: StudentPlan, example_input: torch.Tensor) -> int:
    """MACs of the student ``plan`` would make of ``teacher``, per input, without building it
    with a scorer or training it.

    Args:
        teacher: The teacher; left untouched.
        plan: Kernel sizes and ratios of the student.
        example_input: A batch shaped like the model's input (only its first item is used).

    Raises:
        UsageError: the plan names a layer that is not in the teacher.
    """
    return MacsCounter(teacher, example_input).macs(plan)


@dataclasses.dataclass(frozen=True)
class RepairResult:
    """A plan pushed under a MACs budget.

    Attributes:
        plan: The plan to train: the input plan when it was within budget, else one whose
            every group is named in ``ratios``.
        macs: Its student's MACs.
        feasible: Whether ``macs`` is within the budget.
        repaired: Whether ``plan`` differs from the input plan.
    """

    plan: StudentPlan
    macs: int
    feasible: bool
    repaired: bool


def _scaled(plan: StudentPlan, base: dict[str, float], max_ratio: float, s: float) -> StudentPlan:
    # Groups already above max_ratio keep their ratio: a repair never prunes less than asked.
    ratios = {name: r + s * max(0.0, max_ratio - r) for name, r in base.items()}
    return dataclasses.replace(plan, ratios=ratios)


def repair(
    teacher: nn.Module,
    plan: StudentPlan,
    budget_macs: int,
    example_input: torch.Tensor,
    max_ratio: float = 0.9,
    counter: MacsCounter | None = None,
) -> RepairResult:
    """``plan``, or the least-changed plan that raises every group's ratio by a common fraction
    ``s`` of the way to ``max_ratio`` (``r + s * (max_ratio - r)``) to fit ``budget_macs``.

    ``s`` is the smallest in [0, 1] that fits, found by bisection; kernel sizes are kept. When
    even ``s = 1`` does not fit, the ``s = 1`` plan comes back with ``feasible`` False.

    Args:
        teacher: The teacher; left untouched.
        plan: The plan to check.
        budget_macs: Most MACs per input the student may cost.
        example_input: A batch shaped like the model's input.
        max_ratio: Ratio every group tends to as ``s`` reaches 1, in [0, 1).
        counter: A :class:`MacsCounter` of ``teacher`` to reuse across calls (one is made
            when None).

    Raises:
        UsageError: the plan names a layer that is not in the teacher.
        ValueError: ``max_ratio`` is outside [0, 1).
    """
    if not 0.0 <= max_ratio < 1.0:
        raise ValueError(f"max_ratio must be in [0, 1) (got {max_ratio})")
    counter = counter or MacsCounter(teacher, example_input)
    macs = counter.macs(plan)
    if macs <= budget_macs:
        return RepairResult(plan, macs, feasible=True, repaired=False)

    base = group_ratios(counter.groups(), plan)
    best = _scaled(plan, base, max_ratio, 1.0)
    best_macs = counter.macs(best)
    if best_macs > budget_macs:
        return RepairResult(best, best_macs, feasible=False, repaired=True)
    low, high = 0.0, 1.0
    for _ in range(_MAX_STEPS):
        if high - low < _TOLERANCE:
            break
        mid = (low + high) / 2
        candidate = _scaled(plan, base, max_ratio, mid)
        candidate_macs = counter.macs(candidate)
        if candidate_macs <= budget_macs:
            high, best, best_macs = mid, candidate, candidate_macs
        else:
            low = mid
    return RepairResult(best, best_macs, feasible=True, repaired=True)
