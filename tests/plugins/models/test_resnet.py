"""The ``resnet`` zoo model: layer names, shortcuts and the residual channel groups."""

from __future__ import annotations

import torch
from torch import nn

from prunetune.plugins.models.resnet import BasicBlock, ResNetFactory
from prunetune.structure.groups import find_groups


def _build(**options) -> nn.Module:
    return ResNetFactory(ResNetFactory.Config(**options)).build(1, 10, 28)


def test_default_layer_names_and_widths() -> None:
    model = _build()
    convs = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs == {
        "stem.conv": 16,
        "layer1.0.conv1": 16,
        "layer1.0.conv2": 16,
        "layer2.0.conv1": 32,
        "layer2.0.conv2": 32,
        "layer2.0.shortcut.conv": 32,
        "layer3.0.conv1": 64,
        "layer3.0.conv2": 64,
        "layer3.0.shortcut.conv": 64,
    }
    assert isinstance(model.get_submodule("classifier"), nn.Linear)


def test_depth_adds_blocks_and_only_first_blocks_downsample() -> None:
    model = _build(depth=2, width=4)
    blocks = {n: m for n, m in model.named_modules() if isinstance(m, BasicBlock)}
    assert sorted(blocks) == [f"layer{s}.{i}" for s in (1, 2, 3) for i in (0, 1)]
    strided = sorted(n for n, b in blocks.items() if b.conv1.stride == (2, 2))
    assert strided == ["layer2.0", "layer3.0"]
    projected = sorted(n for n, b in blocks.items() if not isinstance(b.shortcut, nn.Identity))
    assert projected == strided


def test_residual_adds_tie_a_stage_into_one_group() -> None:
    model = _build(depth=2, width=4)
    groups = {g.name: set(g.layer_names) for g in find_groups(model, torch.randn(1, 1, 28, 28))}
    assert groups["stem.conv"] == {"stem.conv", "layer1.0.conv2", "layer1.1.conv2"}
    assert groups["layer2.0.conv2"] == {
        "layer2.0.conv2",
        "layer2.0.shortcut.conv",
        "layer2.1.conv2",
    }
    assert groups["layer1.0.conv1"] == {"layer1.0.conv1"}
