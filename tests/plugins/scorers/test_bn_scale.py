from __future__ import annotations

import torch
from torch import nn

from prunetune.plugins.scorers.bn_scale import BNScaleScorer
from prunetune.plugins.scorers.l1 import L1Scorer
from prunetune.testing.scorers import conformance_context, conformance_model


def test_absolute_gamma(score):
    model = nn.Sequential(
        nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1)
    ).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -2.0, 1.0]))
    scores = score(BNScaleScorer(BNScaleScorer.Config()), model, torch.randn(1, 1, 4, 4))["0"]
    assert torch.allclose(scores, torch.tensor([0.5, 2.0, 1.0]))
    assert scores.argsort().tolist() == [0, 2, 1]


def test_residual_group_sums_every_norm(score):
    model = conformance_model()
    ctx = conformance_context(model)
    scores = score(BNScaleScorer(BNScaleScorer.Config()), model, ctx.example_input)
    expected = model.stem_bn.weight.detach().abs() + model.block_bn.weight.detach().abs()
    assert torch.allclose(scores["stem"], expected)


def test_group_without_norm_falls_back_to_l1(score, conv_pair):
    example = torch.randn(1, 4, 4, 4)
    bn = score(BNScaleScorer(BNScaleScorer.Config()), conv_pair, example)["0"]
    l1 = score(L1Scorer(L1Scorer.Config()), conv_pair, example)["0"]
    assert torch.equal(bn, l1)
