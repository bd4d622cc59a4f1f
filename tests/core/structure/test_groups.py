from __future__ import annotations

import torch

from prunetune.structure.groups import find_groups, output_layers
from prunetune.structure.outputs import select_output
from tests.core import patterns
from tests.core.toy import ConcatDepthwise, Residual


def test_concat_into_depthwise_is_one_group_with_a_segment_per_branch() -> None:
    model = ConcatDepthwise()
    groups = {g.name: g for g in find_groups(model, torch.randn(1, 3, 8, 8))}
    assert set(groups) == {"a", "pw"}  # fc (the classifier) is never a group
    group = groups["a"]
    assert group.size == 48
    assert sorted(group.layer_names) == ["a", "b", "dw"]
    assert [len(s) for s in group.segments] == [16, 32]
    assert group.segments[0] == list(range(16))
    assert {m.name for m in group.norms} == {"bn"}
    assert {m.name for m in group.consumers} == {"pw"}


def test_residual_add_ties_stem_and_conv2() -> None:
    groups = {g.name: g for g in find_groups(Residual(), torch.randn(1, 3, 8, 8))}
    assert set(groups) == {"stem", "conv1"}
    assert sorted(groups["stem"].layer_names) == ["conv2", "stem"]
    assert groups["stem"].segments == [list(range(8))]
    assert {m.name for m in groups["stem"].consumers} == {"conv1", "fc"}


def test_remove_cuts_every_member() -> None:
    model = ConcatDepthwise()
    group = next(g for g in find_groups(model, torch.randn(1, 3, 8, 8)) if g.name == "a")
    group.remove(list(range(8)) + list(range(16, 32)))
    assert (model.a.out_channels, model.b.out_channels) == (8, 16)
    assert model.dw.out_channels == model.dw.groups == 24
    assert model.bn.num_features == 24 and model.pw.in_channels == 24
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_output_layers_are_those_whose_channels_no_layer_takes() -> None:
    assert output_layers(Residual(), torch.randn(1, 3, 8, 8)) == ["fc"]
    x = torch.randn(1, 1, 12, 12)
    assert output_layers(patterns.TupleOut(), x) == ["aux_fc", "fc"]
    assert output_layers(patterns.Aux().eval(), x) == ["aux_fc", "fc"]  # traced in training mode, where aux runs
    assert output_layers(select_output(patterns.TupleOut(), 0, heads=["aux_conv"]), x) == ["aux_conv", "aux_fc", "fc"]


def test_finding_groups_leaves_batchnorm_statistics_and_mode_alone() -> None:
    model = Residual().train()
    before = model.bn1.running_mean.clone()
    find_groups(model, torch.randn(2, 3, 8, 8) + 5.0)
    assert model.training and torch.equal(model.bn1.running_mean, before)
