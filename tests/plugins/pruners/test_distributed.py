from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from prunetune.components.pruning import PruneJob, Pruner, PruneRecord
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.host.manager import Host
from prunetune.host.options import EmptyConfig
from prunetune.plugins.pruners.channel import ChannelPruner
from prunetune.plugins.pruners.distributed import DistributedPruner, group_cost, partition, shares
from prunetune.plugins.scorers.l1 import L1Scorer
from prunetune.plugins.scorers.taylor import TaylorScorer
from prunetune.structure.groups import find_groups
from prunetune.structure.plan import StudentPlan

EXAMPLE = torch.randn(1, 1, 28, 28)


def _resnet() -> nn.Module:
    return Host.create().registry.create("model", "resnet", {"width": 4}).build(1, 10, 28)


def _calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 1, 28, 28, generator=generator), torch.randint(0, 10, (8,), generator=generator))
        for _ in range(2)
    ]


def _shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {name: value.shape for name, value in model.state_dict().items()}


def _prune(pruner: Pruner, model: nn.Module, plan: StudentPlan, scorer: Scorer) -> PruneRecord:
    ctx = ScoreContext(model, EXAMPLE, _calibration() if scorer.needs_data else ())
    return pruner.prune(PruneJob(model, plan, scorer, ctx))


@pytest.mark.parametrize(
    ("costs", "n", "runs"),
    [
        ([1, 1, 1, 1], 2, [range(0, 2), range(2, 4)]),
        ([1, 1, 1, 9], 2, [range(0, 3), range(3, 4)]),
        ([9, 1, 1, 1], 2, [range(0, 1), range(1, 4)]),
        ([5, 5], 4, [range(0, 1), range(1, 2)]),  # never an empty run
        ([0, 0, 0], 3, [range(0, 1), range(1, 2), range(2, 3)]),
        ([3, 1, 2], 1, [range(0, 3)]),
        ([], 2, []),
    ],
)
def test_partition(costs: list[float], n: int, runs: list[range]) -> None:
    assert partition(costs, n) == runs


def test_stages_are_contiguous_and_cover_every_group_once() -> None:
    groups = find_groups(_resnet(), EXAMPLE)
    for workers in (1, 2, 3):
        stages = shares(groups, workers)
        assert len(stages) == workers
        assert [g.name for stage in stages for g in stage] == [g.name for g in groups]
    first, second = (sum(group_cost(g) for g in stage) for stage in shares(groups, 2))
    assert 0.5 < first / second < 2


@pytest.mark.parametrize("scorer", [L1Scorer(L1Scorer.Config()), TaylorScorer(EmptyConfig())], ids=["l1", "taylor"])
@pytest.mark.parametrize(
    "plan",
    [StudentPlan(ratio=0.5, ratios={"layer2.0.conv1": 0.25}), StudentPlan(macs_target=0.4)],
    ids=["local", "global"],
)
def test_two_workers_cut_what_one_process_cuts(ray_cluster: Any, scorer: Scorer, plan: StudentPlan) -> None:
    model = _resnet()
    reference = copy.deepcopy(model)
    record = _prune(DistributedPruner(DistributedPruner.Config(workers=2)), model, plan, scorer)
    expected = _prune(ChannelPruner(ChannelPruner.Config()), reference, plan, scorer)
    assert record.removed == expected.removed and record.removed
    assert record.physical and record.extra == {"workers": 2}
    assert _shapes(model) == _shapes(reference)


def test_one_worker_and_replay(ray_cluster: Any) -> None:
    model = _resnet()
    pruner = DistributedPruner(DistributedPruner.Config(workers=1))
    record = _prune(pruner, model, StudentPlan(ratio=0.5), L1Scorer(L1Scorer.Config()))
    assert record.extra == {"workers": 1}
    fresh = _resnet()
    DistributedPruner(DistributedPruner.Config()).replay(fresh, PruneRecord.from_dict(record.to_dict()), EXAMPLE)
    assert _shapes(fresh) == _shapes(model)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DistributedPruner.Config(workers=0)
