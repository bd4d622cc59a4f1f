"""The ``attention`` distiller: attention transfer (Zagoruyko & Komodakis 2017)."""

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

__all__ = ["AttentionDistiller", "attention_map", "prunetune_add_components"]


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """The L2-normalised spatial attention of ``[N, C, H, W]`` features: ``[N, H * W]``.

    ``A = mean_c |F_c|^p``, flattened, divided by its L2 norm. Channel counts drop out, so
    a pruned student compares directly with its teacher.
    """
    att = features.abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(att, p=2.0, dim=1)


class AttentionDistiller(Distiller):
    """Attention transfer: match the students' spatial attention maps to the teacher's."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``attention`` distiller.

        The loss is ``(1 - alpha) * CE + alpha * T^2 * KL + beta * sum_l ||A_s,l - A_t,l||_2``,
        the norm averaged over the batch.

        Attributes:
            beta: Weight of the attention term, >= 0.
            p: Exponent of the attention map, > 0.
            alpha: Weight of the soft-target term, in ``[0, 1]`` (0: no logit distillation).
            T: Softmax temperature of the soft-target term, > 0.
            layers: Layer names matched in student and teacher; empty picks each stage's output.
        """

        beta: float = 1.0
        p: float = 2.0
        alpha: float = 0.0
        T: float = 4.0
        layers: tuple[str, ...] = ()

        def __post_init__(self) -> None:
            check_kd_weights(self.alpha, self.T)
            if not self.beta >= 0.0:
                raise ValueError(f"beta must be >= 0, got {self.beta}")
            if not self.p > 0.0:
                raise ValueError(f"p must be > 0, got {self.p}")

    def __init__(self, config: Config) -> None:
        self.config = config
        self._layers: list[str] = []

    def bind(
        self, student: nn.Module, teacher: nn.Module, example_input: torch.Tensor
    ) -> nn.Module:
        """Match layers by name and spatial size; no trainable modules are needed."""
        matched = match_layers(
            student, teacher, example_input, self.config.layers, "distiller 'attention'"
        )
        self._layers = [m.name for m in matched]
        return nn.Module()

    def student_layers(self) -> list[str]:
        return list(self._layers)

    def teacher_layers(self) -> list[str]:
        return list(self._layers)

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        loss = hard_soft_loss(batch, self.config.alpha, self.config.T)
        p = self.config.p
        for name in self._layers:
            a_s = attention_map(batch.student_features[name], p)
            a_t = attention_map(batch.teacher_features[name].detach(), p)
            loss = loss + self.config.beta * (a_s - a_t).norm(p=2, dim=1).mean()
        return loss


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_distiller("attention", AttentionDistiller)
