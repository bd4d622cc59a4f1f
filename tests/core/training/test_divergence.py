"""A loss, weights or validation loss that stop being finite end training with TrainingDiverged."""

from __future__ import annotations

import math
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunetune.components.distillation import DistillBatch, Distiller
from prunetune.errors import TrainingDiverged, UsageError
from prunetune.jobs.compress import run_compress
from prunetune.jobs.spec import CompressSpec
from prunetune.testing.distillers import TinyConvNet, tiny_problem
from prunetune.training import loop
from prunetune.training.recipe import TrainRecipe
from prunetune.training.train import brief_distill, distill, train_supervised

CPU = torch.device("cpu")
DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


class _BadAt(Distiller):
    """Cross-entropy, except that call ``at`` (from 1) returns ``value``; counts its calls."""

    uses_teacher = False

    def __init__(self, at: int, value: float = math.nan) -> None:
        self.at, self.value, self.calls = at, value, 0

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        self.calls += 1
        loss = F.cross_entropy(batch.student_logits, batch.targets)
        return loss * self.value if self.calls == self.at else loss


class _Exploding(Distiller):
    """A finite loss whose gradient on the bound weight is 1e10: with lr 1e30 it becomes inf."""

    uses_teacher = False

    def bind(self, student: nn.Module, teacher: nn.Module, example_input: torch.Tensor) -> nn.Module:
        self.extra = nn.Linear(1, 1, bias=False)
        nn.init.constant_(self.extra.weight, 0.5)
        return self.extra

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        return F.cross_entropy(batch.student_logits, batch.targets) + 1e10 * self.extra.weight.sum()


class _NaNWhenEvaluated(TinyConvNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if self.training else out * math.nan


def _models() -> tuple[TinyConvNet, TinyConvNet]:
    torch.manual_seed(0)
    return TinyConvNet((8, 16)), TinyConvNet((4, 8))


@pytest.fixture(params=["per-step", "per-epoch"])
def per_epoch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether the loss is read once per epoch, as on a GPU; "per-epoch" makes a CPU do so too."""
    if request.param == "per-epoch":
        init = loop.LossWatch.__init__

        def deferred(self: loop.LossWatch, device: torch.device) -> None:
            init(self, device)
            self.eager = False

        monkeypatch.setattr(loop.LossWatch, "__init__", deferred)
    return request.param == "per-epoch"


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize(("value", "name"), [(math.nan, "NaN"), (math.inf, "inf")])
def test_a_bad_loss_stops_distillation_in_its_epoch_naming_the_step(
    device: torch.device, value: float, name: str, per_epoch: bool
) -> None:
    teacher, student = _models()
    x, y = tiny_problem(20)  # 5 steps of 4 per epoch: step 7 is the second of epoch 2
    distiller = _BadAt(7, value)
    reported: list[int] = []
    with pytest.raises(TrainingDiverged) as caught:
        distill(student, teacher, distiller, x, y, TrainRecipe(epochs=3, batch_size=4), device,
                val=(x, y), progress=False, on_epoch=lambda e, m: reported.append(e))
    assert str(caught.value) == f"loss became {name} at step 7 (epoch 2 of distill; lower --lr?)"
    assert reported == [1], "the diverged epoch is never reported"
    if device.type == "cpu" and not per_epoch:
        assert distiller.calls == 7, "a CPU stops at the bad step"
    else:
        assert distiller.calls == 10, "a GPU stops at the end of the bad step's epoch"


def test_the_message_is_the_last_line_of_the_traceback() -> None:
    teacher, student = _models()
    x, y = tiny_problem(8)
    with pytest.raises(TrainingDiverged) as caught:
        distill(student, teacher, _BadAt(1), x, y, TrainRecipe(epochs=1, batch_size=4), CPU, progress=False)
    lines = "".join(traceback.format_exception(caught.value)).strip().splitlines()
    assert lines[-1] == "prunetune.errors.TrainingDiverged: loss became NaN at step 1 (epoch 1 of distill; lower --lr?)"
    assert not isinstance(caught.value, UsageError)


def test_a_huge_learning_rate_stops_teacher_training_in_the_first_epoch() -> None:
    torch.manual_seed(0)
    x, y = tiny_problem(32)
    reported: list[int] = []
    message = r"^loss became NaN at step 2 \(epoch 1 of teacher; lower --teacher-lr\?\)$"
    with pytest.raises(TrainingDiverged, match=message):
        train_supervised(TinyConvNet((4, 8)), x, y, TrainRecipe(epochs=3, batch_size=8, lr=1e30), CPU,
                         progress=False, on_epoch=lambda e, m: reported.append(e))
    assert reported == []


def test_weights_that_become_infinite_stop_training_after_their_epoch() -> None:
    teacher, student = _models()
    x, y = tiny_problem(8)  # one step per epoch, with a finite loss: only the weights tell
    reported: list[int] = []
    with pytest.raises(TrainingDiverged) as caught:
        distill(student, teacher, _Exploding(), x, y, TrainRecipe(epochs=2, batch_size=8, lr=1e30), CPU,
                progress=False, on_epoch=lambda e, m: reported.append(e))
    assert str(caught.value).startswith("weights became non-finite after epoch 1 of distill (")
    assert str(caught.value).endswith(" tensors; lower --lr?)")
    assert reported == []


def test_a_non_finite_validation_loss_stops_training() -> None:
    torch.manual_seed(0)
    x, y = tiny_problem(16)
    message = r"^validation loss became NaN after epoch 1 of fine-tune \(lower --lr\?\)$"
    with pytest.raises(TrainingDiverged, match=message):
        train_supervised(_NaNWhenEvaluated((4, 8)), x, y, TrainRecipe(epochs=2, batch_size=8), CPU,
                         progress=False, desc="fine-tune", val=(x, y))


def test_an_empty_validation_split_is_not_divergence() -> None:
    torch.manual_seed(0)
    x, y = tiny_problem(16)
    history = train_supervised(TinyConvNet((4, 8)), x, y, TrainRecipe(epochs=1, batch_size=8), CPU,
                               progress=False, val=(x[:0], y[:0]))
    assert math.isnan(history[0]["val_loss"])


def test_brief_distill_stops_at_the_bad_step(per_epoch: bool) -> None:
    teacher, student = _models()
    x, y = tiny_problem(16)
    distiller = _BadAt(2)
    message = r"^loss became NaN at step 2 \(retraining between pruning steps; lower --lr\?\)$"
    with pytest.raises(TrainingDiverged, match=message):
        brief_distill(student, teacher, distiller, x, y, 5, CPU, batch_size=4)
    assert distiller.calls == (5 if per_epoch else 2)


def test_recipe_refuses_a_non_finite_lr() -> None:
    for lr in (math.inf, math.nan):
        with pytest.raises(ValueError, match="lr must be finite and > 0"):
            TrainRecipe(lr=lr)


def _tiny_spec(out: Path, **changes: Any) -> CompressSpec:
    settings: dict[str, Any] = {
        "dataset_options": {"limit": 256}, "model_options": {"width": 4}, "teacher_epochs": 1, "epochs": 1,
        "finetune_epochs": 1, "batch_size": 64, "device": "cpu", "progress": False, "out": str(out),
    }
    return CompressSpec(**{**settings, **changes})


def test_compress_with_a_huge_lr_raises_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "student.pt"
    with pytest.raises(TrainingDiverged, match=r"^(loss became (NaN|inf) at step \d+|weights became non-finite after) "
                                               r".*epoch 1 of distill.*lower --lr\?\)$"):
        run_compress(_tiny_spec(out, lr=1e30), echo=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_compress_refuses_to_write_a_non_finite_student(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def poison(model: nn.Module, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        with torch.no_grad():
            next(model.parameters()).fill_(math.nan)
        return []

    monkeypatch.setattr("prunetune.jobs.compress.train_supervised", poison)  # the fine-tuning stage
    out = tmp_path / "student.pt"
    message = r"^the student's weights are not finite \(1 of \d+ tensors\); nothing written$"
    with pytest.raises(TrainingDiverged, match=message):
        run_compress(_tiny_spec(out, epochs=0), echo=lambda line: None)
    assert list(tmp_path.iterdir()) == []
