from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from prunetune.components.pruning import PruneJob, PruneRecord
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.pruners.blockwise import BlockwisePruner, prunetune_add_components
from prunetune.plugins.scorers.l1 import L1Scorer
from prunetune.structure.groups import ChannelGroup
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan
from tests.core.toy import ConcatDepthwise, Residual

SHAPE = (3, 6, 6)


class Chain(nn.Module):
    """conv1 3->8 -> relu -> conv2 8->8 -> pool -> fc 8->2 (the classifier, never cut)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(y.mean((2, 3)))


class Equal(Scorer):
    """Every channel scores 1: blocks are ranked by magnitude alone."""

    def score(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        return torch.ones(group.size)


class ZeroShare(Scorer):
    """A channel matters less the more of its weights are zero (as data-driven scores do)."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        self.calls += 1
        weight = group.producers[0].module.weight.detach().flatten(1)
        return 1 - 0.9 * (weight == 0).float().mean(1)


def _fill(layer: nn.Module, values: list[list[float]]) -> None:
    """Set each block of ``layer`` (rows of out ranges by in ranges) to one value."""
    with torch.no_grad():
        layer.bias.fill_(0.01)
        out_ranges = torch.tensor_split(torch.arange(layer.weight.shape[0]), len(values))
        for rows, row_values in zip(out_ranges, values):
            cols = torch.tensor_split(torch.arange(layer.weight.shape[1]), len(row_values))
            for col, value in zip(cols, row_values):
                layer.weight[rows[0] : rows[-1] + 1, col[0] : col[-1] + 1] = value


def _prune(
    model: nn.Module, plan: StudentPlan, scorer: Scorer | None = None, **options: int
) -> PruneRecord:
    pruner = BlockwisePruner(BlockwisePruner.Config(**{"out_blocks": 2, "in_blocks": 2, **options}))
    ctx = ScoreContext(model, torch.randn(1, *SHAPE))
    return pruner.prune(PruneJob(model, plan, scorer or Equal(), ctx))


def _chain(conv2: list[list[float]], conv1: list[list[float]] | None = None) -> Chain:
    model = Chain()
    _fill(model.conv2, conv2)
    if conv1 is not None:
        _fill(model.conv1, conv1)
    return model


@pytest.mark.parametrize("scorer", [Equal(), L1Scorer(L1Scorer.Config())])
def test_the_two_lowest_blocks_are_zeroed(scorer: Scorer) -> None:
    model = _chain([[1.0, 0.2], [3.0, 0.1]])
    conv1 = copy.deepcopy(model.conv1)
    record = _prune(model, StudentPlan(ratios={"conv2": 0.5}), scorer)
    assert record.extra["blocks"] == [["conv2", 0, 4, 4, 8], ["conv2", 4, 8, 4, 8]]
    assert record.removed == {} and not record.physical and record.extra["block_sparsity"] == 0.5
    assert model.conv2.weight[:, 4:].abs().sum() == 0 and (model.conv2.weight[:, :4] != 0).all()
    assert torch.equal(model.conv1.weight, conv1.weight)


def test_an_output_range_zero_in_every_block_is_removed_and_macs_fall() -> None:
    model = _chain([[1.0, 3.0], [0.1, 0.2]])
    macs = count_macs_params(model, SHAPE)[0]
    record = _prune(model, StudentPlan(ratios={"conv2": 0.5}))
    assert record.removed == {"conv2": [4, 5, 6, 7]} and record.physical
    assert (model.conv2.out_channels, model.fc.in_features) == (4, 4)
    assert record.extra["blocks"] == [] and record.extra["block_sparsity"] == 0.5
    assert record.extra["macs"] == count_macs_params(model, SHAPE)[0] < macs
    assert model(torch.randn(2, *SHAPE)).shape == (2, 2)


def test_blocks_are_scored_again_after_each_zeroing() -> None:
    # Static scores take the two smallest blocks (0.5 then 1.0). Once the 0.5 block is zero,
    # its rows score 0.55 and the 1.5 block beside it (0.825) falls below the 1.0 block.
    values = [[1.0, 1.1], [0.5, 1.5]]
    scorer = ZeroShare()
    record = _prune(_chain(values), StudentPlan(ratios={"conv2": 0.5}), scorer)
    assert scorer.calls == 2 and record.removed == {"conv2": [4, 5, 6, 7]}

    scorer = ZeroShare()
    record = _prune(_chain(values), StudentPlan(ratios={"conv2": 0.5}), scorer, rescore_every=2)
    assert scorer.calls == 1 and record.removed == {}
    assert record.extra["blocks"] == [["conv2", 0, 4, 0, 4], ["conv2", 4, 8, 0, 4]]


def _two_layers() -> tuple[Chain, PruneRecord]:
    # conv1 loses its first four channels; conv2's block reading them goes with them and its
    # other zeroed block now reads inputs 0-4 instead of 4-8.
    model = _chain([[0.1, 1.0], [2.0, 0.2]], conv1=[[0.1, 0.1], [1.0, 1.0]])
    return model, _prune(model, StudentPlan(ratio=0.5))


def test_blocks_follow_the_removal_of_their_input_channels() -> None:
    model, record = _two_layers()
    assert record.removed == {"conv1": [0, 1, 2, 3]}
    assert model.conv2.weight.shape == (8, 4, 3, 3)
    assert record.extra["blocks"] == [["conv2", 4, 8, 0, 4]]
    assert record.extra["layer_block_sparsity"] == {"conv1": 0.5, "conv2": 0.5}
    assert model.conv2.weight[4:].abs().sum() == 0 and (model.conv2.weight[:4] == 1.0).all()


def test_masked_blocks_stay_zero_through_training() -> None:
    model = _chain([[1.0, 0.2], [3.0, 0.1]])
    _prune(model, StudentPlan(ratios={"conv2": 0.5}))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        loss = model(torch.randn(4, *SHAPE)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model(torch.randn(1, *SHAPE))
    assert model.conv2.weight[:, 4:].abs().sum() == 0 and model.conv2.weight[:, :4].abs().sum() > 0


def test_replay_and_load_give_the_pruned_model() -> None:
    model, record = _two_layers()
    fresh = Chain()
    saved = PruneRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    BlockwisePruner(BlockwisePruner.Config()).replay(fresh, saved, torch.zeros(1, *SHAPE))
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, *SHAPE)
    assert torch.equal(fresh(x), model(x))
    with torch.no_grad():
        fresh.conv2.weight.fill_(1.0)
    fresh(x)
    assert fresh.conv2.weight[4:].abs().sum() == 0 and fresh.conv2.weight[:4].abs().sum() > 0


def test_replay_refuses_blocks_that_do_not_fit() -> None:
    record = PruneRecord(removed={}, physical=True, extra={"blocks": [["conv2", 0, 4, 0, 9]]})
    with pytest.raises(UsageError, match="does not fit"):
        BlockwisePruner(BlockwisePruner.Config()).replay(Chain(), record, torch.zeros(1, *SHAPE))


def test_ratio_zero_leaves_the_model_unchanged() -> None:
    model = Chain()
    before = copy.deepcopy(model.state_dict())
    record = _prune(model, StudentPlan(ratio=0.0), ZeroShare())
    assert record.removed == {} and record.extra["blocks"] == [] and record.extra["block_sparsity"] == 0.0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(("conv2_low", "removed"), [(1, []), (0, [0, 1, 2, 3])])
def test_residual_channels_go_only_when_zero_in_every_producer(conv2_low: int, removed: list[int]) -> None:
    model = Residual()
    _fill(model.stem, [[0.1], [1.0]])
    _fill(model.conv2, [[0.1], [1.0]] if conv2_low == 0 else [[1.0], [0.1]])
    record = _prune(model, StudentPlan(ratios={"stem": 0.5}), in_blocks=1)
    kept = 8 - len(removed)
    assert record.removed == ({"stem": removed} if removed else {})
    assert model.stem.out_channels == model.conv2.out_channels == kept
    assert model.conv1.in_channels == model.fc.in_features == kept
    assert record.extra["blocks"] == ([] if removed else [["conv2", 4, 8, 0, 12], ["stem", 0, 4, 0, 3]])


def test_depthwise_convs_are_split_over_output_channels_only() -> None:
    # Group "a" is a (16) and b (32) concatenated into dw (48): a's first block and dw's
    # first block cover channels 0-3 together; b's zeroed block meets no zero dw block.
    model = ConcatDepthwise()
    _fill(model.a, [[0.1], [1.0], [1.0], [1.0]])
    _fill(model.b, [[1.0], [1.0], [1.0], [0.1]])
    _fill(model.dw, [[0.1], [1.0], [1.0], [1.0]])
    record = _prune(model, StudentPlan(ratios={"a": 0.25}), out_blocks=4, in_blocks=4)
    assert record.removed == {"a": [0, 1, 2, 3]}
    assert (model.a.out_channels, model.b.out_channels, model.dw.out_channels) == (12, 32, 44)
    b_blocks = [["b", 24, 32, i, i + 1] for i in range(3)]  # 3 inputs: 3 in-blocks of one
    assert record.extra["blocks"] == [*b_blocks, ["dw", 0, 8, 0, 1]]
    assert record.extra["layer_block_sparsity"] == {"dw": 0.25, "a": 0.25, "b": 0.25}
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_options_are_checked_and_a_macs_target_is_refused() -> None:
    registry = Registry()
    prunetune_add_components(registry)
    pruner = registry.create("pruner", "blockwise", {"out_blocks": "2", "rescore_every": "3"})
    assert (pruner.config.out_blocks, pruner.config.in_blocks, pruner.config.rescore_every) == (2, 4, 3)
    with pytest.raises(UsageError, match="in_blocks must be a positive integer"):
        registry.create("pruner", "blockwise", {"in_blocks": "0"})
    with pytest.raises(UsageError, match="MACs target"):
        _prune(Chain(), StudentPlan(macs_target=0.5))
