from __future__ import annotations

import dataclasses

import pytest

from prunetune.errors import UsageError
from prunetune.host.registry import DuplicateComponentError, Registry


class Thing:
    """A thing for tests.

    More text that is not the description.
    """

    @dataclasses.dataclass(frozen=True)
    class Config:
        size: int = 3
        name: str = "x"

    def __init__(self, config: Config) -> None:
        self.config = config


def test_add_get_create_and_description() -> None:
    registry = Registry()
    registry._set_origin("plug", "dist", "1.0")
    registry.add_scorer("thing", Thing)
    component = registry.get("scorer", "thing")
    assert (component.plugin, component.distribution, component.version) == ("plug", "dist", "1.0")
    assert component.description == "A thing for tests."
    made = registry.create("scorer", "thing", {"size": "7"})
    assert made.config == Thing.Config(size=7, name="x")


def test_unknown_name_lists_valid_names() -> None:
    registry = Registry()
    registry.add_scorer("b", Thing)
    registry.add_scorer("a", Thing)
    with pytest.raises(UsageError, match=r"unknown scorer 'zz' \(valid: a, b\)"):
        registry.get("scorer", "zz")


def test_duplicate_names_both_plugins() -> None:
    registry = Registry()
    registry._set_origin("first", "pkg-one", "1")
    registry.add_pruner("same", Thing)
    registry._set_origin("second", "pkg-two", "2")
    with pytest.raises(DuplicateComponentError, match=r"'first' \(pkg-one\) and 'second' \(pkg-two\)"):
        registry.add_pruner("same", Thing)


def test_same_name_in_two_kinds_is_fine_and_unknown_kind_is_not() -> None:
    registry = Registry()
    registry.add_scorer("x", Thing)
    registry.add_pruner("x", Thing)
    assert len(registry) == 2
    with pytest.raises(ValueError, match="unknown component kind"):
        registry.add("gadget", "x", Thing)


def test_unknown_option_is_rejected_with_valid_keys() -> None:
    registry = Registry()
    registry.add_scorer("thing", Thing)
    with pytest.raises(UsageError, match=r"scorer 'thing' has no option colour \(valid: name, size\)"):
        registry.create("scorer", "thing", {"colour": "red"})


def test_iteration_is_by_kind_then_name() -> None:
    registry = Registry()
    registry.add_pruner("b", Thing)
    registry.add_scorer("z", Thing)
    registry.add_model("m", Thing)
    assert [(c.kind, c.name) for c in registry] == [("model", "m"), ("scorer", "z"), ("pruner", "b")]
