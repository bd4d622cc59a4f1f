"""What ``compress`` and ``search`` both take, with the same checks: the model and data, the
components, the teacher's recipe and the students' training settings; and what ``compress``
adds. Imports no torch: the command line reads its defaults from here."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from prunetune.errors import UsageError
from prunetune.structure.plan import StudentPlan
from prunetune.training.recipe import SCHEDULES

__all__ = ["CompressSpec", "JobSpec"]


def _finite_positive(value: float) -> bool:
    # inf passes `> 0` yet turns every weight NaN on the first step.
    return math.isfinite(value) and value > 0


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """The settings shared by :class:`CompressSpec` and
    :class:`~prunetune.searching.spec.SearchSpec`; each adds its own after these."""

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
    # For a model returning several outputs: which is the logits (an index, or a name of a named
    # tuple or dict), and the layers whose outputs are model outputs (never cut).
    logits: int | str | None = None
    classifier: tuple[str, ...] = ()
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
        if isinstance(self.classifier, (list, str)):  # a JSON list, or one layer name
            object.__setattr__(self, "classifier", (self.classifier,) if isinstance(self.classifier, str)
                               else tuple(self.classifier))
        checks = [
            (self.logits is None or (isinstance(self.logits, (int, str)) and not isinstance(self.logits, bool)),
             f"--logits must be an output's index or name, got {self.logits!r}"),
            (isinstance(self.classifier, tuple) and all(isinstance(c, str) and c for c in self.classifier),
             f"--classifier must be layer names, got {self.classifier!r}"),
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


@dataclasses.dataclass(frozen=True)
class CompressSpec(JobSpec):
    """Everything ``prunetune compress`` takes: the shared settings, the plan and its stages."""

    plan: StudentPlan = dataclasses.field(default_factory=lambda: StudentPlan(ratio=0.5))
    epochs: int = 3
    # Hinton KD at alpha 0.5 already weighs the labels; a CE epoch at lr/10 after it cost accuracy.
    finetune_epochs: int = 0
    calibration_batches: int = 4
    device: str = "auto"
    out: str | None = "student.pt"
    #: A saved student (compress's or search's output, or a search trial's checkpoint) to train
    #: further instead of pruning the teacher; its own plan stands, so ``plan`` stays the default.
    start_from: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("epochs", "finetune_epochs", "calibration_batches"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.start_from is not None and self.plan != StudentPlan(ratio=0.5):
            raise UsageError(f"--from {self.start_from} trains that student further with its own plan: "
                             "give no plan (--plan, --ratio, --layer-ratio, --kernel, --round-to, --macs-target, "
                             "--max-ratio) with it")
