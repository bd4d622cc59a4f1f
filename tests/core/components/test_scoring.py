from __future__ import annotations

import pytest
import torch

from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.structure.groups import find_groups
from tests.core.toy import Residual


class OnePass(Scorer):
    """Scores every group in one call."""

    def __init__(self) -> None:
        self.calls = 0

    def score_groups(self, groups, ctx):  # type: ignore[no-untyped-def]
        self.calls += 1
        return {g.name: torch.arange(g.size, dtype=torch.float32) for g in groups}


class Neither(Scorer):
    """Implements nothing."""


def test_score_falls_back_to_score_groups_and_an_empty_scorer_says_so() -> None:
    model, example = Residual(), torch.randn(1, 3, 8, 8)
    group = find_groups(model, example)[0]
    scorer = OnePass()
    assert torch.equal(scorer.score(group, ScoreContext(model, example)), torch.arange(group.size, dtype=torch.float32))
    assert scorer.calls == 1
    with pytest.raises(NotImplementedError, match="neither score nor score_groups"):
        Neither().score(group, ScoreContext(model, example))
