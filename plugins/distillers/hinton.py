"""The ``hinton`` distiller: soft targets from the teacher's logits (Hinton et al. 2015)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from prunetune import hookimpl
from prunetune.components.distillation import DistillBatch, Distiller
from prunetune.plugins.distillers._common import check_kd_weights, hard_soft_loss

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = ["HintonDistiller", "prunetune_add_components"]


class HintonDistiller(Distiller):
    """Hard labels plus the teacher's temperature-softened logits (KL divergence)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``hinton`` distiller.

        The loss is ``(1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``.

        Attributes:
            T: Softmax temperature, > 0.
            alpha: Weight of the soft-target term, in ``[0, 1]``.
        """

        T: float = 4.0
        alpha: float = 0.5

        def __post_init__(self) -> None:
            check_kd_weights(self.alpha, self.T)

    def __init__(self, config: Config) -> None:
        self.config = config

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        return hard_soft_loss(batch, self.config.alpha, self.config.T)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_distiller("hinton", HintonDistiller)
