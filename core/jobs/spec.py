"""What ``compress`` and ``search`` both take, with the same checks: the model and data, the
components, the teacher's recipe and the students' training settings."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from prunetune.errors import UsageError
from prunetune.training.recipe import SCHEDULES

__all__ = ["JobSpec"]


def _finite_positive(value: float) -> bool:
    # inf passes `> 0` yet turns every weight NaN on the first step.
    return math.isfinite(value) and value > 0


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """The settings shared by :class:`~prunetune.jobs.compress.CompressSpec` and
    :class:`~prunetune.search.spec.SearchSpec`; each adds its own after these."""

    model: str = "resnet"
    dataset: str = "fashion_mnist_demo"
    scorer: str = "l1"
    pruner: str = "channel"
    distiller: str = "hinton"
    model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dataset_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    scorer_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pruner_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    distiller_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    teacher_epochs: int = 15
    teacher_lr: float = 0.1
    teacher_checkpoint: str | None = None
    # The students' recipe: Torch-Pruning's fine-tuning recipe (SGD with Nesterov momentum, one
    # cycle), which beat cosine at lr 0.02, batch 64 on four teachers (benchmarks/recipe.py).
    # The teacher takes the batch size and its own lr; TrainRecipe's cosine and no Nesterov.
    batch_size: int = 128
    lr: float = 0.05
    schedule: str = "onecycle"
    nesterov: bool = True
    seed: int = 0
    val_fraction: float = 0.1
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.teacher_epochs >= 0, f"--teacher-epochs must be 0 or more, got {self.teacher_epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (_finite_positive(self.lr), f"--lr must be a finite positive number, got {self.lr}"),
            (_finite_positive(self.teacher_lr),
             f"--teacher-lr must be a finite positive number, got {self.teacher_lr}"),
            (self.schedule in SCHEDULES,
             f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (isinstance(self.nesterov, bool), f"--nesterov must be true or false, got {self.nesterov!r}"),
            # Written so that nan fails too: every comparison with nan is False.
            (0.0 < self.val_fraction < 1.0, f"--val-fraction must be in (0, 1), got {self.val_fraction}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
