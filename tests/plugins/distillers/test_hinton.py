from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prunetune.components.distillation import DistillBatch
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.distillers import hinton
from prunetune.plugins.distillers._common import kd_kl_term
from prunetune.plugins.distillers.hinton import HintonDistiller
from prunetune.testing.distillers import DistillerConformance


class TestHintonConformance(DistillerConformance):
    def make_distiller(self) -> HintonDistiller:
        return HintonDistiller(HintonDistiller.Config())


def _make(**options: object) -> HintonDistiller:
    registry = Registry()
    hinton.prunetune_add_components(registry)
    return registry.create("distiller", "hinton", options)


def test_defaults() -> None:
    config = HintonDistiller.Config()
    assert (config.T, config.alpha) == (4.0, 0.5)


def test_alpha_zero_is_cross_entropy() -> None:
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    loss = _make(alpha=0.0).loss(DistillBatch(s, t, y))
    assert torch.allclose(loss, F.cross_entropy(s, y))


def test_matches_hand_computation() -> None:
    s, t, y = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], 1
    T, alpha = 2.0, 0.25

    def softmax(v: list[float], temp: float) -> list[float]:
        e = [math.exp(a / temp) for a in v]
        return [a / sum(e) for a in e]

    ce = -math.log(softmax(s, 1.0)[y])
    p_t, p_s = softmax(t, T), softmax(s, T)
    kl = sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
    expected = (1 - alpha) * ce + alpha * T * T * kl

    loss = _make(T=str(T), alpha=str(alpha)).loss(
        DistillBatch(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]))
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_kl_term_is_zero_for_identical_logits() -> None:
    logits = torch.randn(4, 7)
    assert kd_kl_term(logits, logits.clone(), T=3.0).abs().item() < 1e-6
    y = torch.randint(0, 7, (4,))
    loss = _make(alpha=1.0).loss(DistillBatch(logits, logits.clone(), y))
    assert loss.abs().item() < 1e-6


def test_kl_term_is_batch_mean() -> None:
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    doubled = kd_kl_term(torch.cat([s, s]), torch.cat([t, t]), T=2.0)
    assert torch.allclose(doubled, kd_kl_term(s, t, T=2.0))


def test_no_gradient_to_teacher_logits() -> None:
    s = torch.randn(2, 3, requires_grad=True)
    t = torch.randn(2, 3, requires_grad=True)
    _make().loss(DistillBatch(s, t, torch.tensor([0, 1]))).backward()
    assert s.grad is not None and t.grad is None


def test_needs_teacher_logits() -> None:
    with pytest.raises(ValueError, match="teacher logits"):
        _make().loss(DistillBatch(torch.randn(2, 3), None, torch.tensor([0, 1])))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"T": "0"}, "T must be > 0"),
        ({"alpha": "1.5"}, "alpha must be in"),
        ({"alpha": "-0.1"}, "alpha"),
    ],
)
def test_rejects_bad_options(options: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _make(**options)
    with pytest.raises(ValueError):
        HintonDistiller.Config(**{k: float(v) for k, v in options.items()})


def test_registration() -> None:
    registry = Registry()
    hinton.prunetune_add_components(registry)
    assert registry.names("distiller") == ["hinton"]
    assert registry.get("distiller", "hinton").description.startswith("Hard labels plus")
