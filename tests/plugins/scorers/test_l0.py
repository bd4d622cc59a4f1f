from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from prunetune.components.scoring import ScoreContext
from prunetune.errors import UsageError
from prunetune.plugins.scorers.l0 import L0Scorer
from prunetune.structure.groups import find_groups
from prunetune.testing.scorers import conformance_context, conformance_model


def _rigged(conv: nn.Conv2d) -> None:
    """Channel 0 is always 0 after a ReLU, channel 1 always 1, channel 2 the input's sign."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[2] = 1.0
        conv.bias.copy_(torch.tensor([-1.0, 1.0, 0.0]))


def _check(scores: torch.Tensor) -> None:
    assert scores[0] == 0.0
    assert scores[1] == 1.0
    assert 0.2 < scores[2] < 0.8


def test_counts_non_zero_inputs_of_the_next_conv(score, images):
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1)).eval()
    _rigged(model[0])
    scores = score(L0Scorer(L0Scorer.Config()), model, torch.randn(1, 1, 4, 4), images(1, 4))
    _check(scores["0"])


def test_folds_the_flattened_features_of_a_linear_consumer(score, images):
    model = nn.Sequential(
        nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 2 * 2, 2)
    ).eval()
    _rigged(model[0])
    scores = score(L0Scorer(L0Scorer.Config()), model, torch.randn(1, 1, 2, 2), images(1, 2))
    _check(scores["0"])


def test_falls_back_to_producer_outputs_without_consumers(images):
    # No ReLU in the model: the fallback applies one to the producer's output.
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.Conv2d(3, 2, 1)).eval()
    _rigged(model[0])
    example = torch.randn(1, 1, 4, 4)
    groups = [
        dataclasses.replace(g, members=[m for m in g.members if m.role != "in"])
        for g in find_groups(model, example)
    ]
    ctx = ScoreContext(model, example, images(1, 4))
    _check(L0Scorer(L0Scorer.Config()).score_groups(groups, ctx)["0"])


def test_one_forward_pass_per_batch_for_all_groups():
    model = conformance_model()
    ctx = conformance_context(model)
    groups = find_groups(model, ctx.example_input)
    calls: list[int] = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        L0Scorer(L0Scorer.Config()).score_groups(groups, ctx)
    finally:
        handle.remove()
    assert len(groups) > 1
    assert len(calls) == len(ctx.calibration)


def test_needs_calibration_data(score):
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1)).eval()
    with pytest.raises(UsageError, match="calibration"):
        score(L0Scorer(L0Scorer.Config()), model, torch.randn(1, 1, 4, 4))
