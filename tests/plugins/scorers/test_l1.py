from __future__ import annotations

import torch
from torch import nn

from prunetune.plugins.scorers.l1 import L1Scorer
from prunetune.testing.scorers import conformance_context, conformance_model


def test_sums_producer_weights_and_bias(score, conv_pair):
    scores = score(L1Scorer(L1Scorer.Config()), conv_pair, torch.randn(1, 4, 4, 4))
    assert list(scores) == ["0"]
    assert torch.allclose(scores["0"], torch.tensor([0.6, 4.0, 3.0]))
    assert scores["0"].argsort().tolist() == [0, 2, 1]


def test_include_inputs_adds_the_consumer_weights(score, conv_pair):
    scorer = L1Scorer(L1Scorer.Config(include_inputs=True))
    scores = score(scorer, conv_pair, torch.randn(1, 4, 4, 4))
    assert torch.allclose(scores["0"], torch.tensor([10.6, 4.0, 3.0]))


def test_residual_and_concat_groups_sum_every_producer(score):
    model = conformance_model()
    ctx = conformance_context(model)
    scores = score(L1Scorer(L1Scorer.Config()), model, ctx.example_input)

    def rows(conv: nn.Conv2d) -> torch.Tensor:
        out = conv.weight.detach().abs().flatten(1).sum(1)
        return out if conv.bias is None else out + conv.bias.detach().abs()

    stem = rows(model.stem) + rows(model.block)
    concat = torch.cat([rows(model.wide), rows(model.narrow)]) + rows(model.depthwise)
    assert torch.allclose(scores["stem"], stem)
    assert torch.allclose(scores["wide"], concat)
