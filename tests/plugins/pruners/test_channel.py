from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from prunetune.components.pruning import PruneJob, PruneRecord
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.plugins.pruners.channel import ChannelPruner
from prunetune.structure.groups import ChannelGroup
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan
from tests.core.toy import ConcatDepthwise, Residual


class ByIndex(Scorer):
    """Channel i scores i: the lowest indices go first."""

    def score(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        return torch.arange(group.size, dtype=torch.float32)


def _prune(model: nn.Module, plan: StudentPlan, shape: tuple[int, ...] = (1, 3, 8, 8)) -> PruneRecord:
    example = torch.randn(*shape)
    return ChannelPruner(ChannelPruner.Config()).prune(
        PruneJob(model, plan, ByIndex(), ScoreContext(model, example))
    )


def test_concat_into_depthwise_loses_each_branch_by_its_own_share() -> None:
    # Torch-Pruning's own pruner ranks this group's channels without regard to the branches
    # (1.6.1 here leaves a at 7 and b at 17 channels); prunetune cuts each branch by the ratio.
    reference = ConcatDepthwise()
    tp.pruner.BasePruner(
        reference, torch.randn(1, 3, 8, 8), importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5, ignored_layers=[reference.fc],
    ).step()
    assert (reference.a.out_channels, reference.b.out_channels) != (8, 16)

    model = ConcatDepthwise()
    record = _prune(model, StudentPlan(ratio=0.5))
    assert (model.a.out_channels, model.b.out_channels) == (8, 16)
    assert (model.dw.in_channels, model.dw.out_channels, model.dw.groups) == (24, 24, 24)
    assert model.pw.out_channels == 12 and model.fc.out_features == 10
    assert record.removed["a"] == list(range(8)) + list(range(16, 32))
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_a_per_layer_ratio_reaches_a_group_named_by_a_non_root_layer() -> None:
    model = Residual()
    _prune(model, StudentPlan(ratios={"conv2": 0.5}))
    assert (model.stem.out_channels, model.conv2.out_channels, model.conv1.in_channels) == (4, 4, 4)
    assert model.conv1.out_channels == 12  # ratio 0 leaves a layer alone
    assert model.fc.in_features == 4 and model.fc.out_features == 4


def test_kept_channels_hold_the_teacher_weights() -> None:
    model = Residual()
    teacher = copy.deepcopy(model)
    _prune(model, StudentPlan(ratio=0.5))
    assert torch.equal(model.conv1.weight, teacher.conv1.weight[6:, 4:])
    assert torch.equal(model.bn1.weight, teacher.bn1.weight[6:])


def test_macs_and_params_fall() -> None:
    model = Residual()
    before = count_macs_params(model, (3, 16, 16))
    _prune(model, StudentPlan(ratio=0.5))
    after = count_macs_params(model, (3, 16, 16))
    assert after[0] < 0.35 * before[0] and after[1] < 0.4 * before[1]


def test_round_to_and_never_zero() -> None:
    model = ConcatDepthwise()
    _prune(model, StudentPlan(ratio=0.9, round_to=8))
    assert (model.a.out_channels, model.b.out_channels) == (8, 8)
    model = Residual()
    _prune(model, StudentPlan(ratio=0.99))
    assert model.stem.out_channels == 1 and model.conv1.out_channels == 1


def test_replay_rebuilds_the_same_structure() -> None:
    model = ConcatDepthwise()
    record = _prune(model, StudentPlan(ratio=0.5, ratios={"pw": 0.25}))
    fresh = ConcatDepthwise()
    ChannelPruner(ChannelPruner.Config()).replay(fresh, PruneRecord.from_dict(record.to_dict()), torch.randn(1, 3, 8, 8))
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
