from __future__ import annotations

import importlib

import pytest

from prunetune.components.scoring import Scorer
from prunetune.errors import UsageError
from prunetune.host.registry import Registry

NAMES = ["l0", "l1", "l2", "flops", "taylor", "bn_scale", "random"]


@pytest.mark.parametrize("name", NAMES)
def test_module_registers_its_scorer(name):
    module = importlib.import_module(f"prunetune.plugins.scorers.{name}")
    registry = Registry()
    module.prunetune_add_components(registry)
    assert registry.names("scorer") == [name]
    component = registry.get("scorer", name)
    assert component.description and not component.description.endswith(" ")
    assert isinstance(registry.create("scorer", name), Scorer)
    with pytest.raises(UsageError, match="no option"):
        registry.create("scorer", name, {"bogus": "1"})
