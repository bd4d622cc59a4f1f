"""How to teach: the distiller base class and the tensors a distiller sees per step."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from prunetune.errors import UsageError

__all__ = ["DistillBatch", "Distiller", "capture_outputs"]


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

    Subclasses declare a frozen dataclass ``Config``. The training loop calls :meth:`bind`
    once, then captures the outputs of :meth:`student_layers` and :meth:`teacher_layers` with
    forward hooks on every step and hands them to :meth:`loss` in a :class:`DistillBatch`.
    """

    #: Whether :attr:`DistillBatch.teacher_logits` is needed (False: cross-entropy only).
    uses_teacher: bool = True

    def bind(
        self, student: nn.Module, teacher: nn.Module, example_input: torch.Tensor
    ) -> nn.Module:
        """Prepare for this student and teacher; return the distiller's own trainable modules.

        Feature distillers choose their matched layers here and build adapters. The returned
        module's parameters are trained with the student's (an empty ``nn.Module`` when none);
        the training loop moves it to the training device.
        """
        return nn.Module()

    def student_layers(self) -> list[str]:
        """Qualified names of student layers whose outputs :meth:`loss` needs."""
        return []

    def teacher_layers(self) -> list[str]:
        """Qualified names of teacher layers whose outputs :meth:`loss` needs.

        When empty, a training loop may replace the teacher's forward pass with cached logits.
        """
        return []

    @abc.abstractmethod
    def loss(self, batch: DistillBatch) -> torch.Tensor:
        """The scalar training loss for one step."""


@contextlib.contextmanager
def capture_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of ``model``'s submodules ``names`` while the block runs.

    The yielded dict is filled by forward hooks on every forward pass (a module called twice
    in one pass keeps its last output); the hooks are removed on exit.

    Raises:
        UsageError: a name is not a submodule of ``model``.
    """
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise UsageError(f"model {type(model).__name__} has no layer {', '.join(missing)}")
    outputs: dict[str, torch.Tensor] = {}

    def make_hook(name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                outputs[name] = output

        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
