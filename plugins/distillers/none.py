"""The ``none`` distiller: plain cross-entropy, no teacher."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from prunetune import hookimpl
from prunetune.components.distillation import DistillBatch, Distiller

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = ["NoDistiller", "prunetune_add_components"]


class NoDistiller(Distiller):
    """Cross-entropy on the hard labels only; the teacher is not consulted."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``none`` distiller.

        Attributes:
            label_smoothing: Label smoothing of the cross-entropy, in ``[0, 1)``.
        """

        label_smoothing: float = 0.0

        def __post_init__(self) -> None:
            if not 0.0 <= self.label_smoothing < 1.0:
                raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    uses_teacher = False

    def __init__(self, config: Config) -> None:
        self.config = config

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        return F.cross_entropy(
            batch.student_logits, batch.targets, label_smoothing=self.config.label_smoothing
        )


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_distiller("none", NoDistiller)
