"""How one training stage trains: :class:`TrainRecipe`. Imports no torch, so the command line
reads its defaults and choices cheaply."""

from __future__ import annotations

import dataclasses
import math

__all__ = ["SCHEDULES", "TrainRecipe"]

_OPTIMIZERS = ("sgd", "adam")
#: The learning-rate schedules a stage may use.
SCHEDULES = ("cosine", "onecycle", "constant")


@dataclasses.dataclass(frozen=True)
class TrainRecipe:
    """How to train one stage.

    Attributes:
        epochs: Passes over the training data (0: no training).
        batch_size: Samples per step.
        lr: Peak learning rate.
        momentum: SGD momentum (ignored by Adam).
        nesterov: Nesterov momentum (SGD with ``momentum > 0`` only).
        weight_decay: L2 penalty.
        optimizer: ``"sgd"`` or ``"adam"``.
        schedule: ``"cosine"`` (decay to 0 over all steps), ``"onecycle"`` (torch's
            ``OneCycleLR``: warm up to ``lr``, then anneal to near 0 over all steps) or
            ``"constant"``.
        seed: Seeds shuffling and any randomness inside the stage (adapter init, dropout).
        label_smoothing: Of the cross-entropy in :func:`train_supervised`; distillers own their
            loss.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    schedule: str = "cosine"
    seed: int = 0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be finite and > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (
                self.optimizer in _OPTIMIZERS,
                f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got {self.optimizer!r}",
            ),
            (
                self.schedule in SCHEDULES,
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
            ),
            (
                not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0),
                f"nesterov needs optimizer sgd with momentum > 0, got {self.optimizer}"
                f" with momentum {self.momentum}",
            ),
            (
                0 <= self.label_smoothing < 1,
                f"label_smoothing must be in [0, 1), got {self.label_smoothing}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
