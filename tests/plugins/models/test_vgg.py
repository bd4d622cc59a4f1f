"""The ``vgg`` zoo model: layer names, stages and the flatten-to-linear channel mapping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.models import vgg
from prunetune.structure.groups import find_groups


def _build(size: int = 28, **options) -> nn.Module:
    return vgg.VGGFactory(vgg.VGGFactory.Config(**options)).build(1, 10, size)


def test_default_layer_names() -> None:
    model = _build()
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert names == [
        "stage1.conv1",
        "stage2.conv1",
        "stage3.conv1",
        "stage3.conv2",
        "fc",
        "classifier",
    ]


def test_layers_option_from_the_command_line() -> None:
    registry = Registry()
    vgg.prunetune_add_components(registry)
    factory = registry.create("model", "vgg", {"layers": "2,1,1,1", "width": "4"})
    assert factory.config.layers == (2, 1, 1, 1)
    model = factory.build(3, 10, 32)
    assert isinstance(model.get_submodule("stage4.conv1"), nn.Conv2d)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # Four max-pools need at least 16x16 images.
    with pytest.raises(UsageError, match="16x16 pixels or larger"):
        factory.build(3, 10, 8)


def test_empty_or_zero_layers_rejected() -> None:
    with pytest.raises(ValueError, match="layers"):
        vgg.VGGFactory.Config(layers=())
    with pytest.raises(ValueError, match="layers"):
        vgg.VGGFactory.Config(layers=(1, 0))


def test_pruning_the_last_conv_drops_its_flattened_fc_inputs() -> None:
    model = _build(width=4, hidden=8).eval()
    x = torch.randn(2, 1, 28, 28)
    cut = [0, 2]
    # The same channels, zeroed where they enter fc: the output a correct cut must give.
    reference = _build(width=4, hidden=8).eval()
    reference.load_state_dict(model.state_dict())
    channels = model.get_submodule("stage3.conv2").out_channels
    with torch.no_grad():
        fc = reference.get_submodule("fc")
        per_channel = fc.in_features // channels
        for c in cut:
            fc.weight[:, c * per_channel : (c + 1) * per_channel] = 0
    group = next(g for g in find_groups(model, x[:1]) if g.name == "stage3.conv2")
    group.remove(cut)
    assert model.get_submodule("fc").in_features == (channels - len(cut)) * per_channel
    assert torch.allclose(model(x), reference(x), atol=1e-5)
