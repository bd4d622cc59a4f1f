"""Apply a plan to a teacher: kernel-size changes first, then the pruner with the scorer."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from prunetune.components.pruning import PruneJob, Pruner, PruneRecord
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.structure.kernels import apply_kernels
from prunetune.structure.plan import StudentPlan

__all__ = ["build_student", "check_output_shape"]


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
    steps (see :class:`~prunetune.components.pruning.PruneJob`).
    """
    student = copy.deepcopy(teacher)
    for param in student.parameters():
        param.requires_grad_(True)
    apply_kernels(student, plan.kernels)
    student.eval()
    ctx = ScoreContext(student, example_input, calibration, seed)
    record = pruner.prune(PruneJob(student, plan, scorer, ctx, retrain))
    return student, record


def _output_shape(model: nn.Module, example: torch.Tensor) -> tuple[int, ...]:
    """The shape of one example's output, the model's mode and batch-norm statistics untouched."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()  # in training mode a forward pass would update batch-norm statistics
    try:
        with torch.no_grad():
            return tuple(model(example).shape[1:])
    finally:
        for module, training in modes:
            module.training = training


def check_output_shape(pruner: str, teacher: nn.Module, student: nn.Module, example: torch.Tensor) -> None:
    """Refuse a student whose output differs in shape from the teacher's: distillation would
    fail later with a message that names neither the pruner nor the shapes.

    Raises:
        ValueError: ``pruner 'x' changed the model's output shape from (10,) to (7,)``.
    """
    want, got = _output_shape(teacher, example), _output_shape(student, example)
    if got != want:
        raise ValueError(f"pruner {pruner!r} changed the model's output shape from {want} to {got}")
