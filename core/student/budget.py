"""A MACs budget relative to the teacher: what a plan's student costs, and plans pushed under it.

Counting needs no scorer and no training: which channels go does not change the counts, so
the first channels of every segment are removed, and the pruned copy is counted. The same copy
gives every conv's and linear's shape (:meth:`MacsCounter.layer_shapes`), from which
:mod:`prunetune.student.latency` predicts a latency; :func:`repair` takes such further costs as
:class:`CostLimit` budgets beside the MACs one.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from prunetune.components.selection import group_ratios, kept_count
from prunetune.structure.groups import ChannelGroup, find_groups
from prunetune.structure.kernels import apply_kernels
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import MAX_RATIO, StudentPlan

__all__ = ["CostLimit", "LayerShape", "MacsCounter", "RepairResult", "layer_shapes", "repair", "student_macs"]

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


class LayerShape(NamedTuple):
    """What a conv's or linear's cost depends on, besides its input's spatial size.

    A linear layer has ``kernel`` 1 and ``groups`` 1; ``in_channels`` and ``out_channels`` are
    then its features.
    """

    in_channels: int
    out_channels: int
    kernel: int
    groups: int


def layer_shapes(model: nn.Module) -> dict[str, LayerShape]:
    """The shape of every ``nn.Conv2d`` and ``nn.Linear`` of ``model``, by qualified name (a
    non-square kernel is named by its height)."""
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            shapes[name] = LayerShape(module.in_channels, module.out_channels, module.kernel_size[0], module.groups)
        elif isinstance(module, nn.Linear):
            shapes[name] = LayerShape(module.in_features, module.out_features, 1, 1)
    return shapes


class MacsCounter:
    """Counts the MACs of students of one teacher, for many plans sharing its groups.

    The teacher is copied once per set of kernel sizes, and counts (with the layer shapes) are
    memoised by the channel count every segment keeps, so plans that differ only below one
    channel cost nothing extra.
    """

    def __init__(self, teacher: nn.Module, example_input: torch.Tensor) -> None:
        self.teacher = teacher
        self.example_input = example_input[:1]
        self._kernel_models: dict[tuple[tuple[str, int], ...], nn.Module] = {}
        self._counts: dict[tuple[object, ...], tuple[int, dict[str, LayerShape]]] = {}
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

    def _key(self, plan: StudentPlan) -> tuple[object, ...]:
        key, _ = self._with_kernels(plan)
        ratios = group_ratios(self.groups(), plan)
        kept = tuple(
            kept_count(len(segment), ratios[group.name], plan.round_to)
            for group in self.groups()
            for segment in group.segments
        )
        return (key, kept)

    def architecture(self, plan: StudentPlan) -> nn.Module:
        """A new copy of the teacher shaped as ``plan``'s student: its kernel sizes, and the
        first channels of every segment removed. The weights are not the student's, so it is
        good for counting and timing only.

        Raises:
            UsageError: the plan names a layer that is not in the teacher.
        """
        _, base = self._with_kernels(plan)
        student = copy.deepcopy(base)
        _remove_first(find_groups(student, self.example_input), group_ratios(self.groups(), plan), plan.round_to)
        return student

    def _summary(self, plan: StudentPlan) -> tuple[int, dict[str, LayerShape]]:
        key = self._key(plan)
        if key not in self._counts:
            student = self.architecture(plan)
            macs, _ = count_macs_params(student, tuple(self.example_input.shape[1:]))
            self._counts[key] = (macs, layer_shapes(student))
        return self._counts[key]

    def macs(self, plan: StudentPlan) -> int:
        """MACs of one forward pass of one input through ``plan``'s student.

        Raises:
            UsageError: the plan names a layer that is not in the teacher.
        """
        return self._summary(plan)[0]

    def layer_shapes(self, plan: StudentPlan) -> dict[str, LayerShape]:
        """:func:`layer_shapes` of ``plan``'s student (a shared dict: do not change it).

        Raises:
            UsageError: the plan names a layer that is not in the teacher.
        """
        return self._summary(plan)[1]


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
class CostLimit:
    """A budget besides the MACs one: a cost of a plan's student and the most it may be.

    The cost must not grow as every group's ratio grows (a latency predicted from a monotone
    table, say), or the repair's bisection may miss the least-changed plan that fits.

    Attributes:
        name: Names the cost in :attr:`RepairResult.costs` (e.g. ``latency_b256_ms``).
        cost: The cost of a plan's student.
        limit: The most it may be.
    """

    name: str
    cost: Callable[[StudentPlan], float]
    limit: float


@dataclasses.dataclass(frozen=True)
class RepairResult:
    """A plan pushed under a MACs budget (and any further :class:`CostLimit`).

    Attributes:
        plan: The plan to train: the input plan when it was within budget, else one whose
            every group is named in ``ratios``.
        macs: Its student's MACs.
        feasible: Whether ``macs`` and every further cost are within their budgets.
        repaired: Whether ``plan`` differs from the input plan.
        costs: ``plan``'s further costs, by :attr:`CostLimit.name`.
    """

    plan: StudentPlan
    macs: int
    feasible: bool
    repaired: bool
    costs: Mapping[str, float] = dataclasses.field(default_factory=dict)


def _scaled(plan: StudentPlan, base: dict[str, float], max_ratio: float, s: float) -> StudentPlan:
    # Groups already above max_ratio keep their ratio: a repair never prunes less than asked.
    ratios = {name: r + s * max(0.0, max_ratio - r) for name, r in base.items()}
    return dataclasses.replace(plan, ratios=ratios)


def repair(
    teacher: nn.Module,
    plan: StudentPlan,
    budget_macs: int | None,
    example_input: torch.Tensor,
    max_ratio: float = MAX_RATIO,
    counter: MacsCounter | None = None,
    limits: Sequence[CostLimit] = (),
) -> RepairResult:
    """``plan``, or the least-changed plan that raises every group's ratio by a common fraction
    ``s`` of the way to ``max_ratio`` (``r + s * (max_ratio - r)``) to fit ``budget_macs`` and
    every one of ``limits``.

    ``s`` is the smallest in [0, 1] that fits, found by bisection; kernel sizes are kept. When
    even ``s = 1`` does not fit, the ``s = 1`` plan comes back with ``feasible`` False.

    Args:
        teacher: The teacher; left untouched.
        plan: The plan to check.
        budget_macs: Most MACs per input the student may cost (None: no MACs budget).
        example_input: A batch shaped like the model's input.
        max_ratio: Ratio every group tends to as ``s`` reaches 1, in [0, 1).
        counter: A :class:`MacsCounter` of ``teacher`` to reuse across calls (one is made
            when None).
        limits: Further budgets the student must meet, such as a latency.

    Raises:
        UsageError: the plan names a layer that is not in the teacher.
        ValueError: ``max_ratio`` is outside [0, 1).
    """
    if not 0.0 <= max_ratio < 1.0:
        raise ValueError(f"max_ratio must be in [0, 1) (got {max_ratio})")
    counter = counter or MacsCounter(teacher, example_input)

    def check(candidate: StudentPlan) -> tuple[bool, int, dict[str, float]]:
        macs = counter.macs(candidate)
        costs = {limit.name: limit.cost(candidate) for limit in limits}
        fits = (budget_macs is None or macs <= budget_macs) and all(costs[x.name] <= x.limit for x in limits)
        return fits, macs, costs

    fits, macs, costs = check(plan)
    if fits:
        return RepairResult(plan, macs, feasible=True, repaired=False, costs=costs)

    base = group_ratios(counter.groups(), plan)
    best = _scaled(plan, base, max_ratio, 1.0)
    fits, best_macs, best_costs = check(best)
    if not fits:
        return RepairResult(best, best_macs, feasible=False, repaired=True, costs=best_costs)
    low, high = 0.0, 1.0
    for _ in range(_MAX_STEPS):
        if high - low < _TOLERANCE:
            break
        mid = (low + high) / 2
        candidate = _scaled(plan, base, max_ratio, mid)
        fits, candidate_macs, candidate_costs = check(candidate)
        if fits:
            high, best, best_macs, best_costs = mid, candidate, candidate_macs, candidate_costs
        else:
            low = mid
    return RepairResult(best, best_macs, feasible=True, repaired=True, costs=best_costs)
