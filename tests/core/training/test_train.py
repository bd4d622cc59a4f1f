from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunetune.components.distillation import DistillBatch, Distiller, capture_outputs
from prunetune.errors import UsageError
from prunetune.plugins.distillers.attention import AttentionDistiller
from prunetune.plugins.distillers.hinton import HintonDistiller
from prunetune.testing.distillers import TinyConvNet, tiny_problem
from prunetune.training.loop import evaluate, make_optimizer, teacher_logits_for
from prunetune.training.recipe import TrainRecipe
from prunetune.training.train import distill, train_supervised

CPU = torch.device("cpu")
DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def _models() -> tuple[TinyConvNet, TinyConvNet]:
    torch.manual_seed(0)
    return TinyConvNet((8, 16)), TinyConvNet((4, 8), kernel_sizes=(5, 3))


def _count_forwards(model: nn.Module) -> list[bool]:
    """Records ``model.training`` at every forward pass."""
    calls: list[bool] = []
    model.register_forward_hook(lambda m, a, o: calls.append(m.training))
    return calls


def _hinton() -> HintonDistiller:
    return HintonDistiller(HintonDistiller.Config(T=2.0, alpha=0.5))


@pytest.mark.parametrize(
    "options",
    [
        {"epochs": -1},
        {"batch_size": 0},
        {"lr": 0.0},
        {"momentum": 1.0},
        {"weight_decay": -1e-4},
        {"optimizer": "rmsprop"},
        {"schedule": "step"},
        {"nesterov": True, "momentum": 0.0},
        {"nesterov": True, "optimizer": "adam"},
        {"label_smoothing": 1.0},
    ],
)
def test_recipe_rejects_bad_values(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        TrainRecipe(**options)


def test_recipe_defaults() -> None:
    recipe = TrainRecipe()
    assert (recipe.batch_size, recipe.lr, recipe.momentum, recipe.weight_decay) == (
        128,
        0.05,
        0.9,
        5e-4,
    )
    assert (
        recipe.optimizer == "sgd" and recipe.schedule == "cosine" and recipe.label_smoothing == 0.0
    )
    assert recipe.nesterov is False


class _FixedLogits(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3]


def test_evaluate_accuracy_and_loss_restores_mode() -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    x, y = logits.view(4, 3, 1, 1), torch.tensor([0, 1, 2, 2])
    model = _FixedLogits().train()
    accuracy, loss = evaluate(model, x, y, CPU, batch_size=3)
    assert accuracy == pytest.approx(75.0)
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert model.training
    assert all(math.isnan(v) for v in evaluate(model, x[:0], y[:0], CPU))


def test_train_supervised_learns_a_separable_task() -> None:
    x, y = tiny_problem(64, seed=0)
    vx, vy = tiny_problem(32, seed=1)
    torch.manual_seed(0)
    model = TinyConvNet((4, 8))
    history = train_supervised(
        model, x, y, TrainRecipe(epochs=8, batch_size=16, lr=0.1), CPU, progress=False, val=(vx, vy)
    )
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_accuracy"] >= 90.0
    assert evaluate(model, vx, vy, CPU)[0] == history[-1]["val_accuracy"]


def test_zero_epochs_trains_nothing() -> None:
    model = TinyConvNet((4, 8))
    before = [p.clone() for p in model.parameters()]
    x, y = tiny_problem(8)
    assert train_supervised(model, x, y, TrainRecipe(epochs=0), CPU, progress=False) == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_training_is_seeded_and_leaves_global_rng_alone() -> None:
    x, y = tiny_problem(16)
    recipe = TrainRecipe(epochs=2, batch_size=4, seed=3)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        teacher, student = _models()
        rng = torch.random.get_rng_state()
        distill(
            student,
            teacher,
            AttentionDistiller(AttentionDistiller.Config()),
            x,
            y,
            recipe,
            CPU,
            progress=False,
        )
        assert torch.equal(torch.random.get_rng_state(), rng)
        states.append(student.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_distill_keeps_teacher_frozen(device: torch.device) -> None:
    teacher, student = _models()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    modes = _count_forwards(teacher)
    x, y = tiny_problem(16)
    history = distill(
        student,
        teacher,
        _hinton(),
        x,
        y,
        TrainRecipe(epochs=2, batch_size=8),
        device,
        progress=False,
    )
    assert len(history) == 2 and modes and not any(modes)
    teacher.cpu()
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert not teacher.training
    assert all(p.requires_grad for p in teacher.parameters()), "requires_grad flags are restored"
    assert next(student.parameters()).device.type == device.type


def test_cached_teacher_logits_match_and_skip_the_teacher() -> None:
    x, y = tiny_problem(24)
    recipe = TrainRecipe(epochs=2, batch_size=8, seed=1)
    teacher, student = _models()
    distill(student, teacher, _hinton(), x, y, recipe, CPU, progress=False)
    expected = student.state_dict()

    teacher, student = _models()
    logits = teacher_logits_for(teacher, x, CPU, batch_size=5)
    calls = _count_forwards(teacher)
    distill(student, teacher, _hinton(), x, y, recipe, CPU, teacher_logits=logits, progress=False)
    assert calls == []
    for k, v in student.state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-5), k


def test_feature_distillers_run_the_teacher_despite_cached_logits() -> None:
    x, y = tiny_problem(8)
    teacher, student = _models()
    logits = teacher_logits_for(teacher, x, CPU)
    calls = _count_forwards(teacher)
    distiller = AttentionDistiller(AttentionDistiller.Config(alpha=0.5))
    distill(
        student,
        teacher,
        distiller,
        x,
        y,
        TrainRecipe(epochs=1, batch_size=8),
        CPU,
        teacher_logits=logits,
        progress=False,
    )
    assert len(calls) >= 1


def test_teacher_logits_for_matches_eval_forward() -> None:
    teacher, _ = _models()
    x, _ = tiny_problem(7)
    logits = teacher_logits_for(teacher.train(), x, CPU, batch_size=3)
    assert teacher.training
    with torch.no_grad():
        assert torch.allclose(logits, teacher.eval()(x), atol=1e-6)
    assert logits.shape == (7, 4) and logits.device.type == "cpu"


def test_teacher_logits_of_wrong_length_are_rejected() -> None:
    teacher, student = _models()
    x, y = tiny_problem(8)
    with pytest.raises(ValueError, match="teacher_logits has 3 rows but x has 8"):
        distill(
            student,
            teacher,
            _hinton(),
            x,
            y,
            TrainRecipe(epochs=1),
            CPU,
            teacher_logits=torch.zeros(3, 4),
            progress=False,
        )


class _RecordingDistiller(Distiller):
    """Records what the loop hands over."""

    def __init__(self) -> None:
        self.batches: list[DistillBatch] = []
        self.extra = nn.Linear(1, 1)

    def bind(
        self, student: nn.Module, teacher: nn.Module, example_input: torch.Tensor
    ) -> nn.Module:
        self.example_shape = tuple(example_input.shape)
        return self.extra

    def student_layers(self) -> list[str]:
        return ["stage2"]

    def teacher_layers(self) -> list[str]:
        return ["stage1"]

    def loss(self, batch: DistillBatch) -> torch.Tensor:
        self.batches.append(batch)
        return F.cross_entropy(batch.student_logits, batch.targets) + self.extra.weight.sum() ** 2


def test_loop_hands_features_trains_bound_module_and_reports_epochs() -> None:
    teacher, student = _models()
    x, y = tiny_problem(12)
    distiller = _RecordingDistiller()
    weight = distiller.extra.weight.detach().clone()
    seen: list[tuple[int, dict[str, Any]]] = []
    history = distill(
        student,
        teacher,
        distiller,
        x,
        y,
        TrainRecipe(epochs=2, batch_size=5),
        CPU,
        val=(x, y),
        progress=False,
        on_epoch=lambda e, m: seen.append((e, m)),
    )
    assert distiller.example_shape == (1, 1, 8, 8)
    assert len(distiller.batches) == 6  # 3 batches of 5, 5, 2 per epoch
    batch = distiller.batches[-1]
    assert batch.student_features["stage2"].shape == (2, 8, 4, 4)
    assert batch.teacher_features["stage1"].shape == (2, 8, 8, 8)
    assert batch.teacher_logits is not None and not batch.teacher_logits.requires_grad
    assert not torch.equal(distiller.extra.weight, weight), "the bound module is trained"
    assert [e for e, _ in seen] == [1, 2] and [m for _, m in seen] == history
    assert {"epoch", "train_loss", "val_accuracy", "val_loss", "seconds"} <= history[0].keys()


def test_adam_and_constant_schedule() -> None:
    x, y = tiny_problem(16)
    model = TinyConvNet((4, 8))
    recipe = TrainRecipe(epochs=2, batch_size=8, lr=1e-3, optimizer="adam", schedule="constant")
    history = train_supervised(model, x, y, recipe, CPU, progress=False)
    assert [h["lr"] for h in history] == [1e-3, 1e-3]


def _lrs_used(recipe: TrainRecipe, steps: int) -> list[float]:
    """The learning rate each of ``steps`` optimizer steps uses, stepping the schedule per batch."""
    opt, sched = make_optimizer([nn.Parameter(torch.zeros(1))], recipe, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_one_cycle_rises_to_the_recipes_lr_then_falls_to_near_zero() -> None:
    lrs = _lrs_used(TrainRecipe(lr=0.1, schedule="onecycle"), 100)
    peak = lrs.index(max(lrs))
    assert 10 < peak < 50, "the warm-up is a share of all the steps"
    assert max(lrs) == pytest.approx(0.1)
    assert lrs[0] < 0.1 / 10
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))
    assert lrs[-1] < 0.1 * 1e-3


def test_one_cycle_keeps_the_recipes_momentum() -> None:
    opt, sched = make_optimizer([nn.Parameter(torch.zeros(1))], TrainRecipe(momentum=0.8, schedule="onecycle"), 10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["momentum"] == 0.8


@pytest.mark.parametrize("nesterov", [False, True])
def test_nesterov_reaches_the_optimizer(nesterov: bool) -> None:
    opt, _ = make_optimizer([nn.Parameter(torch.zeros(1))], TrainRecipe(nesterov=nesterov), 1)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"] is nesterov


def test_training_with_one_cycle_and_nesterov_learns() -> None:
    x, y = tiny_problem(64, seed=0)
    torch.manual_seed(0)
    model = TinyConvNet((4, 8))
    recipe = TrainRecipe(epochs=8, batch_size=16, lr=0.1, schedule="onecycle", nesterov=True)
    history = train_supervised(model, x, y, recipe, CPU, progress=False)
    lrs = [h["lr"] for h in history]
    assert lrs[1] > lrs[0] and lrs[-1] < lrs[2] / 100
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("terminal", [True, False])
def test_a_progress_bar_goes_to_stderr_only_on_a_terminal(
    terminal: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    x, y = tiny_problem(8)
    train_supervised(
        TinyConvNet((4, 8)), x, y, TrainRecipe(epochs=1, batch_size=8), CPU, desc="warm-up"
    )
    captured = capsys.readouterr()
    assert ("warm-up" in captured.err) is terminal and captured.out == ""


def test_capture_outputs_rejects_unknown_layers() -> None:
    with (
        pytest.raises(UsageError, match="has no layer nope"),
        capture_outputs(TinyConvNet(), ["nope"]),
    ):
        pass



def test_brief_distill_lowers_the_loss_and_leaves_the_teacher_alone() -> None:
    from prunetune.training.train import brief_distill

    x, y = tiny_problem(32)
    teacher, student = _models()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = _hinton()
    first = brief_distill(student, teacher, distiller, x, y, 3, CPU, batch_size=16, lr=0.05)
    brief_distill(student, teacher, distiller, x, y, 20, CPU, batch_size=16, lr=0.05, seed=1)
    last = brief_distill(student, teacher, distiller, x, y, 3, CPU, batch_size=16, lr=0.05)
    assert last < first
    assert student.training and not teacher.training
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters())
    assert math.isnan(brief_distill(student, teacher, distiller, x, y, 0, CPU))


def test_retrainer_binds_every_call_and_draws_new_batches() -> None:
    from prunetune.training.train import make_retrainer

    x, y = tiny_problem(32)
    teacher, student = _models()
    distiller = _RecordingDistiller()
    retrain = make_retrainer(teacher, distiller, x, y, CPU, batch_size=4)
    retrain(student, 2)
    distiller.example_shape = ()
    retrain(student, 3)
    assert distiller.example_shape == (1, 1, 8, 8), "bound again on the second call"
    assert len(distiller.batches) == 5 and distiller.batches[0].student_logits.shape == (4, 4)
    assert not torch.equal(distiller.batches[0].targets, distiller.batches[2].targets)
