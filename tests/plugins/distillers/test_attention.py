from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prunetune.components.distillation import DistillBatch
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.distillers import attention
from prunetune.plugins.distillers.attention import AttentionDistiller, attention_map
from prunetune.testing.distillers import DistillerConformance, TinyConvNet, tiny_problem


class TestAttentionConformance(DistillerConformance):
    def make_distiller(self) -> AttentionDistiller:
        return AttentionDistiller(AttentionDistiller.Config())


def test_attention_map_by_hand() -> None:
    # Two channels on a 2x2 grid; mean over channels of F^2 is [5, 2, 0, 1], norm sqrt(30).
    features = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[-3.0, 0.0], [0.0, 1.0]]]])
    expected = torch.tensor([[5.0, 2.0, 0.0, 1.0]]) / math.sqrt(30.0)
    assert torch.allclose(attention_map(features), expected)
    # p=1: mean of |F| is [2, 1, 0, 1], norm sqrt(6).
    expected_p1 = torch.tensor([[2.0, 1.0, 0.0, 1.0]]) / math.sqrt(6.0)
    assert torch.allclose(attention_map(features, p=1.0), expected_p1)


def test_attention_map_ignores_channel_count() -> None:
    f = torch.rand(3, 4, 5, 5)
    assert torch.allclose(attention_map(f), attention_map(torch.cat([f, f], dim=1)))
    assert attention_map(f).shape == (3, 25)


def _bound(layers: tuple[str, ...] = ("stage1",), beta: float = 1.0) -> AttentionDistiller:
    distiller = AttentionDistiller(AttentionDistiller.Config(beta=beta, layers=layers))
    x, _ = tiny_problem(2)
    assert isinstance(distiller.bind(TinyConvNet((4, 8)), TinyConvNet(), x[:1]), torch.nn.Module)
    return distiller


def test_loss_for_orthogonal_maps() -> None:
    distiller = _bound(beta=2.0)
    s_feat = torch.zeros(1, 3, 1, 2)
    s_feat[0, :, 0, 0] = 1.0  # all attention on the first pixel
    t_feat = torch.zeros(1, 5, 1, 2)
    t_feat[0, :, 0, 1] = 4.0  # all on the second
    logits, y = torch.randn(1, 4), torch.tensor([2])
    batch = DistillBatch(logits, None, y, {"stage1": s_feat}, {"stage1": t_feat})
    expected = F.cross_entropy(logits, y) + 2.0 * math.sqrt(2.0)
    assert distiller.loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)


def test_identical_maps_add_nothing_and_keep_gradients_finite() -> None:
    distiller = _bound()
    feat = torch.rand(2, 4, 3, 3, requires_grad=True)
    logits = torch.randn(2, 4, requires_grad=True)
    y = torch.tensor([0, 3])
    batch = DistillBatch(logits, None, y, {"stage1": feat}, {"stage1": feat.detach() * 1.0})
    loss = distiller.loss(batch)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-6)
    loss.backward()
    assert feat.grad is not None and torch.isfinite(feat.grad).all()


def test_auto_layers_are_stage_outputs() -> None:
    distiller = _bound(layers=())
    assert distiller.student_layers() == ["stage1", "stage2"]


def test_validation() -> None:
    registry = Registry()
    attention.prunetune_add_components(registry)
    assert registry.create("distiller", "attention", {"p": "1"}).config.p == 1.0
    with pytest.raises(UsageError, match="p must be > 0"):
        registry.create("distiller", "attention", {"p": "0"})
    with pytest.raises(UsageError, match="alpha"):
        registry.create("distiller", "attention", {"alpha": "2"})
