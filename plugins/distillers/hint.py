"""The ``hint`` distiller: FitNets feature regression through 1x1 conv adapters."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from prunetune import hookimpl
from prunetune.components.distillation import DistillBatch, Distiller
from prunetune.plugins.distillers._common import check_kd_weights, hard_soft_loss, match_layers

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = ["HintDistiller", "adapter_key", "prunetune_add_components"]


def adapter_key(layer: str) -> str:
    """The ``nn.ModuleDict`` key of a layer's adapter (module keys may not contain dots)."""
    return layer.replace(".", "_")


class HintDistiller(Distiller):
    """FitNets hints: regress teacher feature maps from the student's through 1x1 adapters."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``hint`` distiller.

        The loss is ``(1 - alpha) * CE + alpha * T^2 * KL + beta * sum_l MSE(adapter_l(S_l), T_l)``.

        Attributes:
            beta: Weight of the feature term, >= 0.
            alpha: Weight of the soft-target term, in ``[0, 1]`` (0: no logit distillation).
            T: Softmax temperature of the soft-target term, > 0.
            layers: Layer names matched in student and teacher; empty picks each stage's output.
        """

        beta: float = 1.0
        alpha: float = 0.0
        T: float = 4.0
        layers: tuple[str, ...] = ()

        def __post_init__(self) -> None:
            check_kd_weights(self.alpha, self.T)
            if not self.beta >= 0.0:
                raise ValueError(f"beta must be >= 0, got {self.beta}")

    def __init__(self, config: Config) -> None:
        self.config = config
        self._layers: list[str] = []
        self._adapters = nn.ModuleDict()

    def bind(
        self, student: nn.Module, teacher: nn.Module, example_input: torch.Tensor
    ) -> nn.Module:
        """Match layers by name and build one ``Conv2d(student_c, teacher_c, 1)`` per layer.

        Returns:
            An ``nn.ModuleDict`` of adapters keyed by :func:`adapter_key`, on the student's device.
        """
        matched = match_layers(
            student, teacher, example_input, self.config.layers, "distiller 'hint'"
        )
        device = example_input.device
        self._layers = [m.name for m in matched]
        self._adapters = nn.ModuleDict(
            {
                adapter_key(m.name): nn.Conv2d(m.student_channels, m.teacher_channels, 1).to(device)
                for m in matched
            }
        )
        return self._adapters

    def student_layers(self) -> list[str]:
        return list(self._layers)

    def teacher_layers(self) -> list[str]:
        return list(self._layers)

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        loss = hard_soft_loss(batch, self.config.alpha, self.config.T)
        for name in self._layers:
            mapped = self._adapters[adapter_key(name)](batch.student_features[name])
            loss = loss + self.config.beta * F.mse_loss(
                mapped, batch.teacher_features[name].detach()
            )
        return loss


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_distiller("hint", HintDistiller)
