from __future__ import annotations

import torch

from prunetune.plugins.scorers.random import RandomScorer
from prunetune.structure.groups import find_groups
from prunetune.testing.scorers import conformance_context, conformance_model


def _scores(config_seed: int | None, ctx_seed: int) -> dict[str, torch.Tensor]:
    model = conformance_model()
    ctx = conformance_context(model, seed=ctx_seed)
    groups = find_groups(model, ctx.example_input)
    return RandomScorer(RandomScorer.Config(seed=config_seed)).score_groups(groups, ctx)


def test_same_seed_same_scores_other_seed_other_scores():
    first, again, other = _scores(None, 1), _scores(None, 1), _scores(None, 2)
    for name in first:
        assert torch.equal(first[name], again[name])
        assert not torch.equal(first[name], other[name])
        assert ((first[name] >= 0) & (first[name] < 1)).all()


def test_config_seed_overrides_the_run_seed():
    a, b = _scores(5, 1), _scores(5, 2)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not torch.equal(a["stem"], _scores(None, 1)["stem"])


def test_groups_get_different_scores():
    scores = _scores(None, 0)
    assert not torch.equal(scores["stem"][:4], scores["wide"][:4])
