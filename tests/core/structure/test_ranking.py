from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunetune.components.pruning import PruneJob
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.components.selection import choose_removals
from prunetune.plugins.pruners.channel import ChannelPruner
from prunetune.plugins.scorers.l1 import L1Scorer
from prunetune.structure.groups import ChannelGroup, find_groups
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan
from prunetune.structure.ranking import (
    CutCounter,
    global_removals,
    min_kept,
    normalise_scores,
    rank_channels,
    segment_cuts,
)
from tests.core.toy import ConcatDepthwise, Residual

EXAMPLE = torch.randn(1, 3, 8, 8)


class Chain(nn.Module):
    """a 3->8, b 8->8, c 8->16, then a linear head: three independent groups a, b, c."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b(torch.relu(self.a(x))))
        return self.fc(torch.relu(self.c(x)).mean((2, 3)))


class Fixed(Scorer):
    """Scores given by hand, per group name."""

    def __init__(self, scores: dict[str, torch.Tensor]) -> None:
        self.scores = scores

    def score(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        return self.scores[group.name]


class FixedComparable(Fixed):
    """Hand-given scores that are already on one scale across groups."""

    comparable = True


def _chain_scores() -> dict[str, torch.Tensor]:
    # b's channels all score far below a's and c's.
    return {
        "a": 10 + torch.arange(8.0),
        "b": 0.001 * (1 + torch.arange(8.0)),
        "c": 100 + torch.arange(16.0),
    }


def _target(counter: CutCounter, cuts: dict[str, list[int]]) -> float:
    return counter.macs(cuts) / counter.base


def test_a_layer_scoring_far_below_the_others_goes_first() -> None:
    model, scores = Chain(), _chain_scores()
    groups = find_groups(model, EXAMPLE)
    counter = CutCounter(model, EXAMPLE)
    plan = StudentPlan(macs_target=_target(counter, {"b": [3]}))
    removals = global_removals(groups, scores, model, EXAMPLE, plan, normalise=False, counter=counter)
    assert removals == {"b": [0, 1, 2]}
    # Local ranking at one ratio would split the cut between every group.
    local = {g.name: choose_removals(g, scores[g.name], 0.125) for g in groups}
    assert all(local.values())


def test_normalised_scores_compare_channels_within_their_group() -> None:
    model = Chain()
    groups = find_groups(model, EXAMPLE)
    scores = {
        "a": torch.tensor([0.01] * 4 + [10.0] * 4),  # a weak half in a strong layer
        "b": torch.full((8,), 1000.0),  # large numbers, all alike
        "c": 1 + torch.arange(16.0),
    }
    normalised = normalise_scores(scores)
    assert torch.allclose(normalised["b"], torch.ones(8, dtype=torch.float64))
    assert [name for name, _ in rank_channels(groups, normalised)[:4]] == ["a"] * 4
    counter = CutCounter(model, EXAMPLE)
    plan = StudentPlan(macs_target=_target(counter, {"a": [4]}))
    assert global_removals(groups, scores, model, EXAMPLE, plan, counter=counter) == {"a": [0, 1, 2, 3]}


def test_the_target_is_met_with_no_channel_to_spare() -> None:
    model = Residual()
    groups = find_groups(model, EXAMPLE)
    scores = L1Scorer(L1Scorer.Config()).score_groups(groups, ScoreContext(model, EXAMPLE))
    counter = CutCounter(model, EXAMPLE)
    plan = StudentPlan(macs_target=0.5)
    removals = global_removals(groups, scores, model, EXAMPLE, plan, counter=counter)
    cuts = segment_cuts(groups, removals)
    assert counter.macs(cuts) <= 0.5 * counter.base
    # Keeping the highest-ranked channel that went would miss the target.
    ranked = rank_channels(groups, normalise_scores(scores))
    name, last = [(n, c) for n, c in ranked if c in removals.get(n, [])][-1]
    cuts = segment_cuts(groups, {**removals, name: [c for c in removals[name] if c != last]})
    assert counter.macs(cuts) > 0.5 * counter.base


def test_max_ratio_caps_a_layer() -> None:
    model, scores = Chain(), _chain_scores()
    groups = find_groups(model, EXAMPLE)
    counter = CutCounter(model, EXAMPLE)
    plan = StudentPlan(macs_target=_target(counter, {"b": [4], "a": [2]}), max_ratio=0.5)
    removals = global_removals(groups, scores, model, EXAMPLE, plan, normalise=False, counter=counter)
    assert removals == {"a": [0, 1], "b": [0, 1, 2, 3]}


def test_an_unreachable_target_cuts_every_segment_as_far_as_it_may() -> None:
    model, scores = Chain(), _chain_scores()
    groups = find_groups(model, EXAMPLE)
    plan = StudentPlan(macs_target=0.01, max_ratio=0.5)
    with pytest.warns(RuntimeWarning, match="out of reach"):
        removals = global_removals(groups, scores, model, EXAMPLE, plan)
    assert {name: len(channels) for name, channels in removals.items()} == {"a": 4, "b": 4, "c": 8}


@pytest.mark.parametrize(
    ("size", "max_ratio", "round_to", "kept"),
    [(16, 0.9, None, 2), (10, 0.99, None, 1), (16, 0.9, 8, 8), (4, 0.9, 8, 4), (32, 0.5, 8, 16)],
)
def test_min_kept(size: int, max_ratio: float, round_to: int | None, kept: int) -> None:
    assert min_kept(size, max_ratio, round_to) == kept


def test_round_to_holds_per_segment() -> None:
    model = ConcatDepthwise()
    groups = find_groups(model, EXAMPLE)
    scores = L1Scorer(L1Scorer.Config()).score_groups(groups, ScoreContext(model, EXAMPLE))
    counter = CutCounter(model, EXAMPLE)
    plan = StudentPlan(macs_target=0.4, round_to=8)
    removals = global_removals(groups, scores, model, EXAMPLE, plan, counter=counter)
    cuts = segment_cuts(groups, removals)
    assert counter.macs(cuts) <= 0.4 * counter.base
    for group in groups:
        for segment, cut in zip(group.segments, cuts.get(group.name, [0] * len(group.segments)), strict=True):
            kept = len(segment) - cut
            assert kept >= 1 and (kept % 8 == 0 or kept == len(segment))


def test_the_channel_pruner_cuts_what_global_ranking_chose() -> None:
    model = ConcatDepthwise()
    reference = copy.deepcopy(model)
    plan = StudentPlan(macs_target=0.5, ratio=0.1)  # under a MACs target the ratio is ignored
    scorer = L1Scorer(L1Scorer.Config())
    before, _ = count_macs_params(model, (3, 8, 8))
    job = PruneJob(model, plan, scorer, ScoreContext(model, EXAMPLE))
    record = ChannelPruner(ChannelPruner.Config()).prune(job)
    groups = find_groups(reference, EXAMPLE)
    scores = scorer.score_groups(groups, ScoreContext(reference, EXAMPLE))
    assert record.removed == global_removals(groups, scores, reference, EXAMPLE, plan)
    after, _ = count_macs_params(model, (3, 8, 8))
    assert after <= 0.5 * before
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_a_comparable_scorer_is_ranked_on_its_own_numbers() -> None:
    scores = _chain_scores()
    model = Chain()
    target = _target(CutCounter(model, EXAMPLE), {"b": [3]})
    job = PruneJob(model, StudentPlan(macs_target=target), FixedComparable(scores), ScoreContext(model, EXAMPLE))
    assert ChannelPruner(ChannelPruner.Config()).prune(job).removed == {"b": [0, 1, 2]}
    assert model.b.out_channels == 5
