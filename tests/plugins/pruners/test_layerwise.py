from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch
from torch import nn

from prunetune.components.pruning import PruneJob, PruneRecord
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.pruners.channel import ChannelPruner
from prunetune.plugins.pruners.layerwise import LayerwisePruner, prunetune_add_components
from prunetune.plugins.scorers.bn_scale import BNScaleScorer
from prunetune.structure.groups import ChannelGroup
from prunetune.structure.plan import StudentPlan
from tests.core.toy import ConcatDepthwise, Residual

EXAMPLE = torch.randn(1, 3, 8, 8)


class Recording(Scorer):
    """|gamma| of the group's BatchNorms (what ``bn_scale`` scores), noting each call's groups."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def score_groups(self, groups: Sequence[ChannelGroup], ctx: ScoreContext) -> dict[str, torch.Tensor]:
        self.calls.append([g.name for g in groups])
        return BNScaleScorer(BNScaleScorer.Config()).score_groups(groups, ctx)


def _residual() -> Residual:
    torch.manual_seed(0)
    model = Residual().eval()
    with torch.no_grad():
        for bn in (model.stem_bn, model.bn1, model.bn2):
            bn.weight.uniform_(0.1, 1.0)
    return model


def _layerwise(steps: int = 5) -> LayerwisePruner:
    return LayerwisePruner(LayerwisePruner.Config(retrain_steps=steps, progress=False))


def _job(model: nn.Module, plan: StudentPlan, scorer: Scorer, retrain=None) -> PruneJob:  # type: ignore[no-untyped-def]
    return PruneJob(model, plan, scorer, ScoreContext(model, EXAMPLE), retrain)


def test_without_retraining_it_cuts_what_the_channel_pruner_cuts() -> None:
    # |gamma| of a group's own BatchNorm does not change when another group is cut, so the
    # per-layer choice must be the one-shot choice.
    plan = StudentPlan(ratio=0.5)
    one_shot, by_layer = _residual(), _residual()
    expected = ChannelPruner(ChannelPruner.Config()).prune(_job(one_shot, plan, BNScaleScorer(BNScaleScorer.Config())))
    record = _layerwise().prune(_job(by_layer, plan, Recording()))
    assert record.removed == expected.removed and record.physical
    assert record.extra == {"order": ["stem", "conv1"]}
    one_state, layer_state = one_shot.state_dict(), by_layer.state_dict()
    assert all(torch.equal(layer_state[k], v) for k, v in one_state.items())


def test_each_layer_is_scored_after_the_previous_layers_retraining() -> None:
    model = _residual()
    calls: list[tuple[int, int, bool]] = []

    def retrain(student: nn.Module, steps: int) -> None:
        calls.append((steps, student.stem.out_channels, student.conv1.out_channels))
        student.train()
        if len(calls) == 1:
            with torch.no_grad():  # make conv1's first six channels the strongest
                student.bn1.weight.copy_(torch.linspace(2.0, 1.0, 12))

    scorer = Recording()
    record = _layerwise(steps=7).prune(_job(model, StudentPlan(ratio=0.5), scorer, retrain))
    assert calls == [(7, 4, 12), (7, 4, 6)], "once per cut layer, after its cut, before the next"
    assert scorer.calls == [["stem"], ["conv1"]]
    assert record.removed["conv1"] == list(range(6, 12))
    assert torch.equal(model.bn1.weight, torch.linspace(2.0, 1.0, 12)[:6])
    before_retraining = _layerwise().prune(_job(_residual(), StudentPlan(ratio=0.5), Recording()))
    assert before_retraining.removed["conv1"] != record.removed["conv1"]
    assert not model.training, "the caller's mode is restored after retraining"


def test_ratio_zero_layers_are_neither_cut_nor_retrained_for() -> None:
    model = _residual()
    calls: list[int] = []
    scorer = Recording()
    record = _layerwise().prune(
        _job(model, StudentPlan(ratios={"conv1": 0.5}), scorer, lambda m, s: calls.append(s))
    )
    assert scorer.calls == [["conv1"]] and calls == [5]
    assert list(record.removed) == ["conv1"] and model.stem.out_channels == 8
    assert model.conv1.out_channels == 6
    model = _residual()
    _layerwise().prune(_job(model, StudentPlan(ratio=0.5), Recording()))
    assert model.conv1.out_channels == 6, "no retrain callback: cut all the same"


def _perturbing(student: nn.Module, steps: int) -> None:
    with torch.no_grad():
        for param in student.parameters():
            param.add_(0.3 * torch.randn_like(param))


@pytest.mark.parametrize(
    "make", [_residual, lambda: ConcatDepthwise(depthwise=False).eval(), lambda: ConcatDepthwise().eval()]
)
def test_replay_rebuilds_the_same_structure(make) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    model = make()
    fresh = copy.deepcopy(model)
    plan = StudentPlan(ratio=0.5, ratios={next(iter(dict(model.named_children()))): 0.25})
    record = _layerwise().prune(_job(model, plan, BNScaleScorer(BNScaleScorer.Config()), _perturbing))
    LayerwisePruner(LayerwisePruner.Config()).replay(fresh, PruneRecord.from_dict(record.to_dict()), EXAMPLE)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in fresh.state_dict().items()} == shapes
    assert shapes != {k: v.shape for k, v in make().state_dict().items()}
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(fresh(EXAMPLE), model(EXAMPLE))


def test_replay_refuses_a_record_whose_order_does_not_match() -> None:
    record = PruneRecord({"conv1": [0]}, physical=True, extra={"order": ["stem"]})
    with pytest.raises(UsageError, match="order"):
        _layerwise().replay(_residual(), record, EXAMPLE)


def test_a_global_macs_target_is_refused() -> None:
    with pytest.raises(UsageError, match="per-layer ratios"):
        _layerwise().prune(_job(_residual(), StudentPlan(macs_target=0.5), Recording()))


def test_registered_with_a_checked_config_and_a_description() -> None:
    registry = Registry()
    prunetune_add_components(registry)
    component = registry.get("pruner", "layerwise")
    assert component.description.startswith("Cut layer by layer")
    assert registry.create("pruner", "layerwise", {"retrain_steps": "3"}).config.retrain_steps == 3
    with pytest.raises(UsageError, match="retrain_steps"):
        registry.create("pruner", "layerwise", {"retrain_steps": "-1"})


def test_progress_bar_names_the_layer(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars show only on a terminal
    LayerwisePruner(LayerwisePruner.Config(retrain_steps=0)).prune(
        _job(_residual(), StudentPlan(ratio=0.5), Recording())
    )
    captured = capsys.readouterr()
    assert "layerwise" in captured.err and "conv1" in captured.err and captured.out == ""
