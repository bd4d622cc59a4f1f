from __future__ import annotations

import pluggy
import pytest
import torch
import torch.nn.functional as F

from prunetune.components.distillation import DistillBatch
from prunetune.errors import UsageError
from prunetune.host import hookspecs
from prunetune.host.registry import Registry
from prunetune.plugins.distillers import none
from prunetune.plugins.distillers.none import NoDistiller
from prunetune.testing.distillers import DistillerConformance, TinyConvNet, tiny_problem
from prunetune.training.recipe import TrainRecipe
from prunetune.training.train import distill


class TestNoDistillerConformance(DistillerConformance):
    def make_distiller(self) -> NoDistiller:
        return NoDistiller(NoDistiller.Config())


def test_registers_through_the_hook() -> None:
    pm = pluggy.PluginManager("prunetune")
    pm.add_hookspecs(hookspecs)
    pm.register(none)
    registry = Registry()
    pm.hook.prunetune_add_components(registry=registry)
    component = registry.get("distiller", "none")
    assert component.cls is NoDistiller
    assert (
        component.description
        == "Cross-entropy on the hard labels only; the teacher is not consulted."
    )


def test_loss_is_cross_entropy_without_teacher_logits() -> None:
    logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    loss = NoDistiller(NoDistiller.Config()).loss(DistillBatch(logits, None, y))
    assert torch.allclose(loss, F.cross_entropy(logits, y))
    assert NoDistiller.uses_teacher is False


def test_label_smoothing_option() -> None:
    registry = Registry()
    none.prunetune_add_components(registry)
    distiller = registry.create("distiller", "none", {"label_smoothing": "0.1"})
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    expected = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert torch.allclose(distiller.loss(DistillBatch(logits, None, y)), expected)
    with pytest.raises(UsageError, match="label_smoothing"):
        registry.create("distiller", "none", {"label_smoothing": "1.5"})


def test_teacher_is_never_run() -> None:
    teacher, student = TinyConvNet(), TinyConvNet((4, 8))
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    x, y = tiny_problem(16)
    recipe = TrainRecipe(epochs=1, batch_size=8)
    distill(
        student,
        teacher,
        NoDistiller(NoDistiller.Config()),
        x,
        y,
        recipe,
        torch.device("cpu"),
        progress=False,
    )
    assert calls == []
