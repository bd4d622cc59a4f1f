"""A conformance suite for distiller plugins, with tiny models to run it on.

Reuse it in a plugin's tests::

    from prunetune.testing.distillers import DistillerConformance

    class TestMyDistiller(DistillerConformance):
        def make_distiller(self):
            return MyDistiller(MyDistiller.Config())

Every check runs on CPU in well under a second. Override :meth:`DistillerConformance.make_models`
when the distiller needs a particular architecture.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from prunetune.components.distillation import DistillBatch, Distiller, capture_outputs
from prunetune.testing.contract import check_component_contract
from prunetune.training.recipe import TrainRecipe
from prunetune.training.train import distill

__all__ = ["DistillerConformance", "TinyConvNet", "tiny_problem"]


class TinyConvNet(nn.Module):
    """Two conv-bn-relu stages (full, then half resolution), average pool, linear head.

    A "pruned" student is the same class with smaller ``widths`` (and maybe other
    ``kernel_sizes``): every layer keeps its qualified name.
    """

    def __init__(
        self,
        widths: tuple[int, int] = (8, 16),
        kernel_sizes: tuple[int, int] = (3, 3),
        in_channels: int = 1,
        num_classes: int = 4,
    ) -> None:
        super().__init__()
        (w1, w2), (k1, k2) = widths, kernel_sizes
        self.stage1 = nn.Sequential(
            nn.Conv2d(in_channels, w1, k1, padding=k1 // 2, bias=False),
            nn.BatchNorm2d(w1),
            nn.ReLU(),
        )
        self.stage2 = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Conv2d(w1, w2, k2, padding=k2 // 2, bias=False),
            nn.BatchNorm2d(w2),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(w2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stage2(self.stage1(x))).flatten(1))


def tiny_problem(
    n: int = 32, size: int = 8, num_classes: int = 4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A separable toy task: the class says which quadrant of a noisy ``size``² image is lit.

    Returns:
        ``(x [n, 1, size, size] float32, y [n] int64)``.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = 0.3 * torch.randn(n, 1, size, size, generator=g)
    half = size // 2
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label % 4, 2)
        x[i, 0, r * half : (r + 1) * half, c * half : (c + 1) * half] += 1.0
    return x, y


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class DistillerConformance:
    """Checks every distiller must pass; subclass it as ``Test...`` and define the factory."""

    def make_distiller(self) -> Distiller:
        """A fresh distiller under test."""
        raise NotImplementedError

    def make_models(self) -> tuple[nn.Module, nn.Module]:
        """``(teacher, pruned student)`` with the same layer names and different widths."""
        torch.manual_seed(0)
        return TinyConvNet((8, 16)), TinyConvNet((4, 8), kernel_sizes=(5, 3))

    def _loss(
        self, distiller: Distiller, student: nn.Module, teacher: nn.Module
    ) -> tuple[torch.Tensor, nn.Module]:
        x, y = tiny_problem(8)
        extra = distiller.bind(student, teacher, x[:1])
        teacher.eval()
        t_logits, t_feats = None, {}
        if distiller.uses_teacher:
            with torch.no_grad(), capture_outputs(teacher, distiller.teacher_layers()) as t_feats:
                t_logits = teacher(x)
        with capture_outputs(student, distiller.student_layers()) as s_feats:
            s_logits = student(x)
        batch = DistillBatch(s_logits, t_logits, y, dict(s_feats), dict(t_feats))
        return distiller.loss(batch), extra

    def test_component_contract(self) -> None:
        check_component_contract(self.make_distiller(), Distiller, "distiller")

    def test_bind_returns_module(self) -> None:
        teacher, student = self.make_models()
        x, _ = tiny_problem(2)
        extra = self.make_distiller().bind(student, teacher, x[:1])
        assert isinstance(extra, nn.Module)

    def test_bind_leaves_models_unchanged(self) -> None:
        teacher, student = self.make_models()
        before = (_state(teacher), _state(student))
        x, _ = tiny_problem(2)
        self.make_distiller().bind(student, teacher, x[:1])
        for model, state in zip((teacher, student), before, strict=True):
            for k, v in model.state_dict().items():
                assert torch.equal(v, state[k]), f"bind changed {k}"

    def test_layers_exist_in_models(self) -> None:
        teacher, student = self.make_models()
        distiller = self.make_distiller()
        x, _ = tiny_problem(2)
        distiller.bind(student, teacher, x[:1])
        assert set(distiller.student_layers()) <= dict(student.named_modules()).keys()
        assert set(distiller.teacher_layers()) <= dict(teacher.named_modules()).keys()

    def test_loss_is_finite_scalar_with_grad_to_student(self) -> None:
        teacher, student = self.make_models()
        loss, _ = self._loss(self.make_distiller(), student, teacher)
        assert loss.dim() == 0 and math.isfinite(loss.item())
        loss.backward()
        grads = [p.grad for p in student.parameters()]
        assert all(g is not None for g in grads), "every student parameter gets a gradient"
        assert any(g.abs().sum() > 0 for g in grads if g is not None)
        assert all(p.grad is None for p in teacher.parameters()), "the teacher gets no gradient"

    def test_same_width_student(self) -> None:
        teacher, _ = self.make_models()
        student = copy.deepcopy(teacher)
        loss, _ = self._loss(self.make_distiller(), student, teacher)
        assert math.isfinite(loss.item())

    def test_teacher_not_updated_by_training(self) -> None:
        teacher, student = self.make_models()
        before = _state(teacher)
        x, y = tiny_problem(16)
        recipe = TrainRecipe(epochs=1, batch_size=8, lr=0.05)
        history = distill(
            student,
            teacher,
            self.make_distiller(),
            x,
            y,
            recipe,
            torch.device("cpu"),
            progress=False,
        )
        assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
        for k, v in teacher.state_dict().items():
            assert torch.equal(v, before[k]), f"teacher {k} changed"
        assert not teacher.training
