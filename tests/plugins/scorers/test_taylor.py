from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunetune.components.scoring import ScoreContext
from prunetune.errors import UsageError
from prunetune.plugins.scorers.taylor import TaylorScorer
from prunetune.structure.groups import find_groups


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).eval()
    with torch.no_grad():
        model[0].weight[0] = 0.0  # channel 0: every w is zero
        model[0].bias[0] = 0.0
        model[2].weight[:, 1] = 0.0  # channel 1: nothing reads it, so every dL/dw is zero
    return model


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(4, 2, generator=generator), torch.randint(0, 2, (4,), generator=generator))
        for _ in range(3)
    ]


def _expected_channel_2(model: nn.Module, batches: list) -> float:
    total = 0.0
    for x, y in batches:
        twin = copy.deepcopy(model)
        F.cross_entropy(twin(x), y).backward()
        layer = twin[0]
        term = (layer.weight * layer.weight.grad)[2].sum() + (layer.bias * layer.bias.grad)[2]
        total += abs(term.item())
    return total / len(batches)


def test_zero_weight_or_zero_gradient_scores_zero(score):
    model, batches = _mlp(), _batches()
    scores = score(TaylorScorer(TaylorScorer.Config()), model, torch.randn(1, 2), batches)["0"]
    assert scores[0] == 0.0
    assert scores[1] == 0.0
    assert scores[2] == pytest.approx(_expected_channel_2(model, batches), rel=1e-5)
    assert scores[2] > 0


def test_scores_frozen_layers_and_restores_grads():
    model, batches, example = _mlp(), _batches(), torch.randn(1, 2)
    groups = find_groups(model, example)  # Torch-Pruning leaves frozen layers out of groups
    model[0].requires_grad_(False)
    model[2].weight.grad = torch.ones_like(model[2].weight)
    ctx = ScoreContext(model, example, batches)
    scores = TaylorScorer(TaylorScorer.Config()).score_groups(groups, ctx)["0"]
    assert scores[2] == pytest.approx(_expected_channel_2(_mlp(), batches), rel=1e-5)
    assert not model[0].weight.requires_grad and model[0].weight.grad is None
    assert torch.equal(model[2].weight.grad, torch.ones_like(model[2].weight))


def test_needs_calibration_data(score):
    with pytest.raises(UsageError, match="calibration"):
        score(TaylorScorer(TaylorScorer.Config()), _mlp(), torch.randn(1, 2))
