from __future__ import annotations

import math

import torch

from prunetune.plugins.scorers.l1 import L1Scorer
from prunetune.plugins.scorers.l2 import L2Scorer


def test_root_of_summed_squares(score, conv_pair):
    scores = score(L2Scorer(L2Scorer.Config()), conv_pair, torch.randn(1, 4, 4, 4))
    expected = torch.tensor([math.sqrt(0.01 + 0.25), 2.0, 3.0])
    assert torch.allclose(scores["0"], expected)


def test_ranks_concentrated_weights_above_spread_ones_unlike_l1(score, conv_pair):
    example = torch.randn(1, 4, 4, 4)
    l1 = score(L1Scorer(L1Scorer.Config()), conv_pair, example)["0"]
    l2 = score(L2Scorer(L2Scorer.Config()), conv_pair, example)["0"]
    assert l1.argsort().tolist() == [0, 2, 1]
    assert l2.argsort().tolist() == [0, 1, 2]


def test_include_inputs_adds_the_consumer_weights(score, conv_pair):
    scorer = L2Scorer(L2Scorer.Config(include_inputs=True))
    scores = score(scorer, conv_pair, torch.randn(1, 4, 4, 4))
    assert torch.allclose(scores["0"][0], torch.tensor(math.sqrt(0.01 + 0.25 + 100.0)))
