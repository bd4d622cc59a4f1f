from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.components.pruning import PruneJob, PruneRecord
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.pruners.magnitude import MagnitudePruner, prunetune_add_components, smallest_weights
from prunetune.structure.groups import ChannelGroup
from prunetune.structure.measure import count_macs_params, weight_sparsity
from prunetune.structure.plan import StudentPlan
from tests.core.toy import Residual

EXAMPLE = torch.randn(1, 3, 8, 8)


class Unused(Scorer):
    def score(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        raise AssertionError("the magnitude pruner ranks |w| itself")


class Chain(nn.Module):
    """conv1 (3->4, 1x1: 12 weights), conv2 (4->4, 1x1: 16 weights), fc (4->2: the classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


def _chain() -> Chain:
    """|w| runs 1..12 over conv1 and 13..28 over conv2, in a shuffled order with mixed signs;
    the classifier's weights are the smallest of all."""
    model = Chain()
    g = torch.Generator().manual_seed(0)
    magnitudes = torch.arange(1, 29, dtype=torch.float32)[torch.randperm(28, generator=g)]
    magnitudes = torch.cat([magnitudes[magnitudes <= 12], magnitudes[magnitudes > 12]])
    signs = torch.where(torch.rand(28, generator=g) < 0.5, -1.0, 1.0)
    with torch.no_grad():
        model.conv1.weight.copy_((signs * magnitudes)[:12].view(4, 3, 1, 1))
        model.conv2.weight.copy_((signs * magnitudes)[12:].view(4, 4, 1, 1))
        model.fc.weight.fill_(1e-3)
    return model.eval()


def _prune(model: nn.Module, plan: StudentPlan) -> PruneRecord:
    example = torch.randn(1, 3, 8, 8)
    return MagnitudePruner(MagnitudePruner.Config()).prune(PruneJob(model, plan, Unused(), ScoreContext(model, example)))


def _train(model: nn.Module, steps: int = 3) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    model.train()
    for _ in range(steps):
        loss = model(torch.randn(4, 3, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_exactly_the_smallest_weights_go_and_never_the_classifier() -> None:
    model = _chain()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # 14 of the 28 weights go: |w| 1..11 (conv1 keeps 1 of its 12, the 99% cap), then 13..15.
    record = _prune(model, StudentPlan(ratio=0.5))
    w1, w2 = before["conv1.weight"], before["conv2.weight"]
    assert torch.equal(model.conv1.weight == 0, w1.abs() <= 11)
    assert torch.equal(model.conv2.weight == 0, w2.abs() <= 15)
    assert torch.equal(model.conv2.weight[w2.abs() > 15], w2[w2.abs() > 15])
    assert torch.equal(model.fc.weight, before["fc.weight"]) and torch.equal(model.conv1.bias, before["conv1.bias"])
    assert not record.physical and record.removed == {}
    assert record.extra == {"sparsity": 14 / 36, "layers": ["conv1", "conv2"]}


def test_no_layer_loses_more_than_99_percent() -> None:
    weights = {"tiny": torch.full((200,), 0.01), "big": torch.arange(1.0, 201.0)}
    masks = smallest_weights(weights, 0.5)  # 200 to cut, but "tiny" may lose only 198
    assert int((masks["tiny"] == 0).sum()) == 198
    assert torch.equal(masks["big"] == 0, torch.arange(200) < 2)


def test_sparsity_matches_the_ratio_and_macs_stay() -> None:
    torch.manual_seed(0)
    model = Residual().eval()
    macs = count_macs_params(model, (3, 8, 8))
    record = _prune(model, StudentPlan(ratio=0.6))
    pool = sum(m.weight.numel() for m in (model.stem, model.conv1, model.conv2))
    assert record.extra["sparsity"] == pytest.approx(weight_sparsity(model))
    assert record.extra["sparsity"] == pytest.approx(0.6 * pool / (pool + 32), abs=1e-3)
    assert record.extra["sparsity"] == pytest.approx(0.6, abs=0.02)
    assert count_macs_params(model, (3, 8, 8)) == macs


def test_a_per_layer_ratio_applies_to_its_groups_producers() -> None:
    torch.manual_seed(0)
    model = Residual().eval()
    _prune(model, StudentPlan(ratio=0.25, ratios={"conv2": 0.5}))
    share = {n: float((m.weight == 0).float().mean()) for n, m in model.named_children() if hasattr(m, "weight")}
    stem_conv2 = (model.stem.weight.numel(), model.conv2.weight.numel())
    assert share["stem"] == int(0.5 * stem_conv2[0]) / stem_conv2[0]
    assert share["conv2"] == 0.5 and share["conv1"] == 0.25 and share["fc"] == 0.0
    with pytest.raises(UsageError, match="not a prunable layer"):
        _prune(Residual().eval(), StudentPlan(ratios={"fc": 0.5}))


def test_zeros_survive_training_and_the_state_dict_after_a_step() -> None:
    torch.manual_seed(0)
    model = Residual().eval()
    _prune(model, StudentPlan(ratio=0.5))
    zeros = {n: m.weight == 0 for n, m in model.named_children() if isinstance(m, nn.Conv2d)}
    _train(model)
    state = model.state_dict()  # right after a step, before any forward pass re-zeroes
    assert all(not state[f"{n}.weight"][z].any() for n, z in zeros.items())
    model(EXAMPLE)
    assert all(not m.weight[zeros[n]].any() and m.weight[~zeros[n]].all() for n, m in model.named_children() if n in zeros)


def test_replay_then_load_keeps_the_zeros_through_training() -> None:
    torch.manual_seed(0)
    model = Residual().eval()
    record = PruneRecord.from_dict(_prune(model, StudentPlan(ratio=0.5)).to_dict())
    _train(model, 1)
    saved = model.state_dict()
    fresh = Residual()
    MagnitudePruner(MagnitudePruner.Config()).replay(fresh, record, EXAMPLE)
    fresh(EXAMPLE)  # a forward pass before loading must not fix the (dense) random weights' mask
    fresh.load_state_dict(saved)
    _train(fresh, 2)
    fresh(EXAMPLE)
    for name in ("stem", "conv1", "conv2"):
        zero = saved[f"{name}.weight"] == 0
        assert zero.float().mean() > 0.3 and not getattr(fresh, name).weight[zero].any()
    assert weight_sparsity(fresh) == pytest.approx(record.extra["sparsity"])


def test_replay_refuses_an_unknown_layer() -> None:
    with pytest.raises(UsageError, match="'nope'"):
        MagnitudePruner(MagnitudePruner.Config()).replay(
            Residual(), PruneRecord({}, physical=False, extra={"layers": ["nope"]}), EXAMPLE
        )


def test_a_macs_target_is_refused_and_the_description_warns() -> None:
    with pytest.raises(UsageError, match="MACs target"):
        _prune(_chain(), StudentPlan(macs_target=0.5))
    registry = Registry()
    prunetune_add_components(registry)
    assert "no dense speed-up" in registry.get("pruner", "magnitude").description
