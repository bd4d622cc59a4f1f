from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.scorers import flops
from prunetune.plugins.scorers.flops import FlopsScorer
from prunetune.plugins.scorers.l1 import L1Scorer
from prunetune.structure.groups import find_groups


class _Branches(nn.Module):
    """A 3x3 and a 1x1 branch concatenated into one depthwise conv: one group, two costs."""

    def __init__(self, narrow_weight: float) -> None:
        super().__init__()
        self.wide = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.narrow = nn.Conv2d(1, 2, 1, bias=False)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.head = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.wide.weight.fill_(1 / 9)
            self.narrow.weight.fill_(narrow_weight)
            self.depthwise.weight.fill_(1 / 9)
            self.head.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(torch.cat([self.wide(x), self.narrow(x)], dim=1))
        return self.head(torch.relu(x))


def test_exact_formula_on_a_plain_group(score):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 3, 1)).eval()
    scores = score(FlopsScorer(FlopsScorer.Config()), model, torch.randn(1, 1, 4, 4))
    # Per channel: 9 * 16 MACs to make it + 3 * 16 to read it = 192. The model has
    # 2*9*16 + 3*2*16 = 384 MACs over 5 output channels, so the average channel costs 76.8.
    importance = model[0].weight.detach().abs().flatten(1).sum(1) + model[0].bias.detach().abs()
    expected = importance / importance.mean() / (192 / 76.8)
    assert torch.allclose(scores["0"], expected)


def test_cheap_branch_wins_over_an_equally_important_expensive_one(score):
    model = _Branches(narrow_weight=1.0).eval()
    example = torch.randn(1, 1, 6, 6)
    (group,) = find_groups(model, example)
    assert group.segments == [[0, 1], [2, 3]]
    l1 = score(L1Scorer(L1Scorer.Config()), model, example)["wide"]
    cost = score(FlopsScorer(FlopsScorer.Config()), model, example)["wide"]
    assert torch.allclose(l1, torch.full((4,), 2.0))
    assert cost[2:].min() > cost[:2].max()


def test_cost_reverses_the_l1_ranking_across_branches(score):
    model = _Branches(narrow_weight=0.9).eval()
    example = torch.randn(1, 1, 6, 6)
    l1 = score(L1Scorer(L1Scorer.Config()), model, example)["wide"]
    cost = score(FlopsScorer(FlopsScorer.Config()), model, example)["wide"]
    assert l1[:2].min() > l1[2:].max()
    assert cost[2:].min() > cost[:2].max()


def test_base_option_is_validated():
    registry = Registry()
    flops.prunetune_add_components(registry)
    assert registry.create("scorer", "flops", {"base": "l2"}).config.base == "l2"
    with pytest.raises(UsageError, match="base"):
        registry.create("scorer", "flops", {"base": "l3"})
