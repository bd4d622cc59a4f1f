"""What every zoo model must do: take small images, name its layers, prune, register."""

from __future__ import annotations

import dataclasses
from types import ModuleType

import pytest
import torch
from torch import nn

from prunetune.components.models import ModelFactory
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.models import mobilenet, resnet, vgg
from prunetune.structure.groups import find_groups
from prunetune.structure.kernels import apply_kernels, kernel_layers

# name, plugin module, factory, small options that keep the tests fast
ZOO = [
    ("resnet", resnet, resnet.ResNetFactory, {"width": 4}),
    ("vgg", vgg, vgg.VGGFactory, {"width": 4, "hidden": 8}),
    ("mobilenet", mobilenet, mobilenet.MobileNetFactory, {"width": 4, "depth": 2}),
]
IDS = [name for name, *_ in ZOO]


def _build(factory_cls: type, options: dict, in_channels: int = 1, size: int = 28) -> nn.Module:
    factory = factory_cls(factory_cls.Config(**options))
    return factory.build(in_channels, 10, size)


@pytest.mark.parametrize(("name", "module", "factory_cls", "options"), ZOO, ids=IDS)
@pytest.mark.parametrize(("in_channels", "size"), [(1, 28), (3, 32), (3, 28), (1, 32)])
def test_output_shape(name, module, factory_cls, options, in_channels, size) -> None:
    model = _build(factory_cls, options, in_channels, size)
    assert model(torch.randn(2, in_channels, size, size)).shape == (2, 10)


@pytest.mark.parametrize(("name", "module", "factory_cls", "options"), ZOO, ids=IDS)
def test_too_small_image_is_a_usage_error(name, module, factory_cls, options) -> None:
    with pytest.raises(UsageError, match=rf"^{name} takes images of 8x8 pixels or larger"):
        _build(factory_cls, options, size=4)


@pytest.mark.parametrize(("name", "module", "factory_cls", "options"), ZOO, ids=IDS)
def test_smallest_valid_image(name, module, factory_cls, options) -> None:
    assert _build(factory_cls, options, size=8)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(("name", "module", "factory_cls", "options"), ZOO, ids=IDS)
def test_every_layer_but_the_classifier_is_in_a_group(name, module, factory_cls, options) -> None:
    model = _build(factory_cls, options)
    groups = find_groups(model, torch.randn(1, 1, 28, 28))
    producers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {n for g in groups for n in g.layer_names} == producers - {"classifier"}


@pytest.mark.parametrize(("name", "module", "factory_cls", "options"), ZOO, ids=IDS)
def test_halving_every_group_leaves_a_working_model(name, module, factory_cls, options) -> None:
    model = _build(factory_cls, options)
    before = sum(p.numel() for p in model.parameters())
    groups = find_groups(model, torch.randn(1, 1, 28, 28))
    sizes = {g.name: g.size for g in groups}
    for group in groups:
        group.remove(list(range(group.size // 2)))
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert sum(p.numel() for p in model.parameters()) < before
    regrouped = {g.name: g.size for g in find_groups(model, torch.randn(1, 1, 28, 28))}
    assert regrouped == {n: s - s // 2 for n, s in sizes.items()}


@pytest.mark.parametrize(("name", "module", "factory_cls", "options"), ZOO, ids=IDS)
def test_larger_kernels_then_pruning(name, module, factory_cls, options) -> None:
    model = _build(factory_cls, options).eval()
    x = torch.randn(2, 1, 28, 28)
    expected = model(x)
    layers = kernel_layers(model)
    assert layers and set(layers.values()) == {3}
    apply_kernels(model, {layer: 5 for layer in layers})
    assert torch.allclose(model(x), expected, atol=1e-5)
    for group in find_groups(model, x[:1]):
        group.remove(list(range(group.size // 2)))
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize(("name", "module", "factory_cls", "options"), ZOO, ids=IDS)
def test_registration(name, module: ModuleType, factory_cls, options) -> None:
    registry = Registry()
    module.prunetune_add_components(registry)
    assert registry.names("model") == [name]
    component = registry.get("model", name)
    assert component.cls is factory_cls
    assert component.description == factory_cls.__doc__.strip().splitlines()[0]
    factory = registry.create("model", name, {"width": "6"})
    assert isinstance(factory, ModelFactory)
    assert factory.config.width == 6
    with pytest.raises(UsageError, match="has no option bogus"):
        registry.create("model", name, {"bogus": "1"})
    with pytest.raises(UsageError, match="width must be at least 1"):
        registry.create("model", name, {"width": "0"})


@pytest.mark.parametrize(("name", "module", "factory_cls", "options"), ZOO, ids=IDS)
def test_config_is_frozen_with_defaults(name, module, factory_cls, options) -> None:
    config = factory_cls.Config()
    assert all(
        f.default is not dataclasses.MISSING for f in dataclasses.fields(config)
    ), "every option needs a default"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.width = 2  # type: ignore[misc]


@pytest.mark.parametrize(("name", "module", "factory_cls", "options"), ZOO, ids=IDS)
def test_bad_build_arguments(name, module, factory_cls, options) -> None:
    factory = factory_cls(factory_cls.Config(**options))
    with pytest.raises(UsageError, match="input channel"):
        factory.build(0, 10, 28)
    with pytest.raises(UsageError, match="class"):
        factory.build(1, 0, 28)
