"""Shared helpers for the scorer tests: score a model's groups in one call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from torch import nn

from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.structure.groups import find_groups

ScoreFn = Callable[..., dict[str, torch.Tensor]]


def _score(
    scorer: Scorer,
    model: nn.Module,
    example_input: torch.Tensor,
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    groups = find_groups(model, example_input)
    ctx = ScoreContext(model, example_input, list(calibration), seed)
    return scorer.score_groups(groups, ctx)


@pytest.fixture
def score() -> ScoreFn:
    """``score(scorer, model, example_input, calibration=(), seed=0)`` -> scores by group."""
    return _score


@pytest.fixture
def images() -> Callable[..., list[tuple[torch.Tensor, torch.Tensor]]]:
    """``images(channels, size, batches=2)`` -> seeded calibration batches of 4 with 2 labels."""

    def make(channels: int, size: int, batches: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(0)
        return [
            (
                torch.randn(4, channels, size, size, generator=generator),
                torch.randint(0, 2, (4,), generator=generator),
            )
            for _ in range(batches)
        ]

    return make


@pytest.fixture
def conv_pair() -> nn.Sequential:
    """Conv(4->3) -> ReLU -> Conv(3->2): group ``"0"`` has three channels with known weights.

    Channel weights: ``[0.1, 0, 0, 0]`` with bias 0.5, ``[1, 1, 1, 1]`` (L1 4, L2 2) and
    ``[3, 0, 0, 0]`` (L1 3, L2 3). Only channel 0 is read by the classifier (weight 10).
    """
    model = nn.Sequential(nn.Conv2d(4, 3, 1), nn.ReLU(), nn.Conv2d(3, 2, 1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(
            torch.tensor([[0.1, 0, 0, 0], [1, 1, 1, 1], [3, 0, 0, 0]]).view(3, 4, 1, 1)
        )
        model[0].bias.copy_(torch.tensor([0.5, 0.0, 0.0]))
        model[2].weight.fill_(0.0)
        model[2].weight[0, 0] = 10.0
    return model
