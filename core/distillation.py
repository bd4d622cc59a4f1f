"""How to teach: the distiller base class and the tensors a distiller sees per step."""

from __future__ import annotations

import abc
import dataclasses

import torch
from torch import nn

__all__ = ["DistillBatch", "Distiller"]


@dataclasses.dataclass
class DistillBatch:
    """One training step's outputs.

    Attributes:
        student_logits: ``[N, classes]``.
        teacher_logits: ``[N, classes]``, or None when the distiller does not use the teacher.
        targets: Hard labels ``[N]``.
        student_features: Outputs of the student layers the distiller asked for, by name.
        teacher_features: Outputs of the teacher layers the distiller asked for, by name.
    """

    student_logits: torch.Tensor
    teacher_logits: torch.Tensor | None
    targets: torch.Tensor
    student_features: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


class Distiller(abc.ABC):
    """A distiller plugin: the training loss of a student taught by a frozen teacher.

    Subclasses declare a frozen dataclass ``Config``.
    """

    #: Whether :attr:`DistillBatch.teacher_logits` is needed (False: cross-entropy only).
    uses_teacher: bool = True

    def bind(self, student: nn.Module, teacher: nn.Module, example_input: torch.Tensor) -> nn.Module:
        """Prepare for this student and teacher; return the distiller's own trainable modules.

        Feature distillers choose their matched layers here and build adapters. The returned
        module's parameters are trained with the student's (an empty ``nn.Module`` when none).
        """
        return nn.Module()

    def student_layers(self) -> list[str]:
        """Qualified names of student layers whose outputs :meth:`loss` needs."""
        return []

    def teacher_layers(self) -> list[str]:
        """Qualified names of teacher layers whose outputs :meth:`loss` needs."""
        return []

    @abc.abstractmethod
    def loss(self, batch: DistillBatch) -> torch.Tensor:
        """The scalar training loss for one step."""
