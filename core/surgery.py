"""Apply a plan to a teacher: kernel-size changes first, then the pruner with the scorer."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from prunetune.kernels import apply_kernels
from prunetune.plan import StudentPlan
from prunetune.pruning import PruneJob, PruneRecord, Pruner
from prunetune.scoring import ScoreContext, Scorer

__all__ = ["build_student"]


def build_student(
    teacher: nn.Module,
    plan: StudentPlan,
    pruner: Pruner,
    scorer: Scorer,
    example_input: torch.Tensor,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    seed: int = 0,
    retrain: Callable[[nn.Module, int], None] | None = None,
) -> tuple[nn.Module, PruneRecord]:
    """A new student: a copy of ``teacher`` with ``plan``'s kernel sizes, pruned by ``pruner``.

    The teacher is left untouched. ``retrain`` is offered to pruners that retrain between
    steps (see :class:`~prunetune.pruning.PruneJob`).
    """
    student = copy.deepcopy(teacher)
    for param in student.parameters():
        param.requires_grad_(True)
    apply_kernels(student, plan.kernels)
    student.eval()
    ctx = ScoreContext(student, example_input, calibration, seed)
    record = pruner.prune(PruneJob(student, plan, scorer, ctx, retrain))
    return student, record
