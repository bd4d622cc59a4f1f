"""Per-group pruning sensitivity of a teacher, and the plans it suggests under a MACs budget.

A search starts from the uniform plan (the standard recipe), then from plans that cut the
groups whose loss suffers least from pruning harder than the others (as in Li et al.'s
sensitivity analysis, or NetAdapt's per-layer allocation), scaled to the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunetune.components.pruning import Pruner
from prunetune.components.scoring import Scorer
from prunetune.structure.plan import StudentPlan
from prunetune.student.budget import CostLimit, MacsCounter
from prunetune.student.surgery import build_student

__all__ = ["group_sensitivity", "sensitivity_plan"]

# Bisection steps for the common scale: the ratios move by less than max_ratio / 2**24 by then.
_STEPS = 24
# Sensitivities below this (in nats) count as this, so one harmless group does not take all cuts.
_FLOOR = 1e-3


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model.eval()(x), y).item()


def group_sensitivity(
    teacher: nn.Module,
    groups: Sequence[str],
    ratio: float,
    pruner: Pruner,
    scorer: Scorer,
    x: torch.Tensor,
    y: torch.Tensor,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
) -> dict[str, float]:
    """How much the cross-entropy on ``(x, y)`` rises when only one group loses ``ratio`` of its
    channels (no retraining); the teacher is left untouched."""
    base = _loss(teacher, x, y)
    out = {}
    for name in groups:
        student, _ = build_student(teacher, StudentPlan(ratios={name: ratio}), pruner, scorer, x[:1], calibration)
        out[name] = _loss(student, x, y) - base
    return out


def sensitivity_plan(
    teacher: nn.Module,
    sensitivity: Mapping[str, float],
    budget_macs: int,
    example_input: torch.Tensor,
    max_ratio: float,
    power: float = 0.5,
    counter: MacsCounter | None = None,
    on_grid: Callable[[dict[str, float]], Mapping[str, float]] | None = None,
    limits: Sequence[CostLimit] = (),
) -> StudentPlan | None:
    """Ratios ``min(c * w_g, max_ratio)`` with ``w_g = (mean sensitivity / sensitivity_g) ** power``,
    for the smallest ``c`` whose student fits ``budget_macs`` and every further limit (a
    latency cap); None when no ``c`` fits.

    Less sensitive groups are cut harder; ``power`` sets how much harder (0: uniform).
    ``on_grid`` maps ratios to those a search space can express (rounding them down); the
    budget is then met by the plan on the grid, which a trial need not repair. Meeting the
    limits here keeps the plan's shape: a trial's repair would widen its narrowest groups.
    """
    clipped = {g: max(s, _FLOOR) for g, s in sensitivity.items()}
    mean = sum(clipped.values()) / len(clipped)
    weights = {g: (mean / s) ** power for g, s in clipped.items()}
    counter = counter or MacsCounter(teacher, example_input)

    def plan(scale: float) -> StudentPlan:
        ratios = {g: min(scale * w, max_ratio) for g, w in weights.items()}
        return StudentPlan(ratios=dict(on_grid(ratios)) if on_grid else ratios)

    def fits(candidate: StudentPlan) -> bool:
        return counter.macs(candidate) <= budget_macs and all(lim.cost(candidate) <= lim.limit for lim in limits)

    high = max_ratio / min(weights.values())  # every group at max_ratio
    if not fits(plan(high)):
        return None
    low = 0.0
    for _ in range(_STEPS):
        mid = (low + high) / 2
        if fits(plan(mid)):
            high = mid
        else:
            low = mid
    return plan(high)
