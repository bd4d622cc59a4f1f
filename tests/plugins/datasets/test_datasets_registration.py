"""The dataset plugins register through the hook, alone and through the plugin host."""

from __future__ import annotations

import dataclasses
from types import ModuleType

import pytest

from prunetune.components.data import DatasetSource
from prunetune.host.registry import Registry
from prunetune.plugins.datasets import cifar10, fashion_mnist_demo, idx, parquet

PLUGINS = [
    ("fashion_mnist_demo", fashion_mnist_demo, fashion_mnist_demo.FashionMnistDemo),
    ("idx", idx, idx.IdxDataset),
    ("parquet", parquet, parquet.ParquetDataset),
    ("cifar10", cifar10, cifar10.Cifar10Dataset),
]


@pytest.mark.parametrize(("name", "module", "cls"), PLUGINS)
def test_hook_registers_the_dataset(name: str, module: ModuleType, cls: type) -> None:
    registry = Registry()
    module.prunetune_add_components(registry)
    component = registry.get("dataset", name)
    assert component.cls is cls
    assert issubclass(cls, DatasetSource)
    assert 0 < len(component.description) <= 80
    assert registry.names("dataset") == [name]


@pytest.mark.parametrize(("name", "module", "cls"), PLUGINS)
def test_config_is_frozen_with_defaults(name: str, module: ModuleType, cls: type) -> None:
    config = cls.Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.limit = 3
    assert isinstance(cls(config), DatasetSource)


def test_host_offers_every_dataset() -> None:
    from prunetune.host.manager import Host

    try:
        registry = Host.create().registry
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("prunetune.plugins.datasets"):
            raise
        pytest.skip(f"another plugin module is not written yet: {exc.name}")
    assert registry.get("dataset", "idx").cls is idx.IdxDataset
    assert set(registry.names("dataset")) >= {name for name, _, _ in PLUGINS}
