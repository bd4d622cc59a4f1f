from __future__ import annotations

import pytest
import torch

from prunetune.components.selection import choose_removals, group_ratios, kept_count
from prunetune.errors import UsageError
from prunetune.structure.groups import find_groups
from prunetune.structure.plan import StudentPlan
from tests.core.toy import ConcatDepthwise, Residual


@pytest.mark.parametrize(
    ("size", "ratio", "round_to", "kept"),
    [
        (16, 0.5, None, 8),
        (16, 0.0, 8, 16),  # ratio 0 leaves a layer alone, whatever round_to says
        (10, 0.99, None, 1),  # never zero channels
        (48, 0.5, 8, 24),
        (40, 0.6, 8, 16),
        (20, 0.5, 8, 8),
        (4, 0.9, 8, 4),  # cannot keep a multiple of 8 of 4: keep them all
        (1, 0.5, None, 1),
    ],
)
def test_kept_count(size: int, ratio: float, round_to: int | None, kept: int) -> None:
    assert kept_count(size, ratio, round_to) == kept


def test_each_concat_branch_loses_its_own_share_of_its_lowest_channels() -> None:
    group = next(g for g in find_groups(ConcatDepthwise(), torch.randn(1, 3, 8, 8)) if g.name == "a")
    scores = torch.arange(48, dtype=torch.float32)
    scores[40] = -1.0  # the worst channel overall lives in branch b
    removed = choose_removals(group, scores, 0.5)
    assert removed == list(range(8)) + sorted([40] + list(range(16, 31)))


def test_plan_keys_reach_the_group_of_any_producer() -> None:
    groups = find_groups(Residual(), torch.randn(1, 3, 8, 8))
    ratios = group_ratios(groups, StudentPlan(ratio=0.1, ratios={"conv2": 0.5}))
    assert ratios == {"stem": 0.5, "conv1": 0.1}


def test_plan_errors() -> None:
    groups = find_groups(Residual(), torch.randn(1, 3, 8, 8))
    with pytest.raises(UsageError, match="'nope', which is not a prunable layer"):
        group_ratios(groups, StudentPlan(ratios={"nope": 0.5}))
    with pytest.raises(UsageError, match="which is not a prunable layer"):
        group_ratios(groups, StudentPlan(ratios={"fc": 0.5}))  # the classifier is never cut
    with pytest.raises(UsageError, match="two ratios"):
        group_ratios(groups, StudentPlan(ratios={"stem": 0.5, "conv2": 0.25}))
