"""The ``mobilenet`` zoo model: inverted residual blocks, depthwise and residual groups."""

from __future__ import annotations

import torch
from torch import nn

from prunetune.plugins.models.mobilenet import InvertedResidual, MobileNetFactory
from prunetune.structure.groups import find_groups


def _build(**options) -> nn.Module:
    return MobileNetFactory(MobileNetFactory.Config(**options)).build(1, 10, 28)


def test_default_layer_names() -> None:
    model = _build()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert names == [
        "stem.conv",
        "layer1.0.depthwise.conv",
        "layer1.0.project.conv",
        "layer2.0.expand.conv",
        "layer2.0.depthwise.conv",
        "layer2.0.project.conv",
        "layer3.0.expand.conv",
        "layer3.0.depthwise.conv",
        "layer3.0.project.conv",
        "head.conv",
    ]
    depthwise = model.get_submodule("layer2.0.depthwise.conv")
    assert depthwise.groups == depthwise.in_channels == 16 * 4
    assert depthwise.stride == (2, 2)


def test_residual_only_where_stride_and_channels_allow() -> None:
    model = _build(width=4, depth=2)
    blocks = {n: b for n, b in model.named_modules() if isinstance(b, InvertedResidual)}
    residual = {n: b.use_residual for n, b in blocks.items()}
    assert residual == {
        "layer1.0": True,
        "layer1.1": True,
        "layer2.0": False,
        "layer2.1": True,
        "layer3.0": False,
        "layer3.1": True,
    }


def test_depthwise_convs_join_their_expand_group() -> None:
    model = _build(width=4, depth=2)
    groups = {g.name: set(g.layer_names) for g in find_groups(model, torch.randn(1, 1, 28, 28))}
    assert groups["layer2.1.expand.conv"] == {"layer2.1.expand.conv", "layer2.1.depthwise.conv"}
    assert groups["layer2.0.project.conv"] == {"layer2.0.project.conv", "layer2.1.project.conv"}


def test_expansion_one_has_no_expand_convs_and_still_prunes() -> None:
    model = _build(width=4, expansion=1)
    assert not any(n.endswith("expand.conv") for n, _ in model.named_modules())
    groups = find_groups(model, torch.randn(1, 1, 28, 28))
    for group in groups:
        group.remove(list(range(group.size // 2)))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
