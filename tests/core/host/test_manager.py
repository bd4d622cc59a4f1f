from __future__ import annotations

import pytest

from prunetune import hookimpl
from prunetune.host.manager import Host
from prunetune.host.options import EmptyConfig
from prunetune.host.registry import DuplicateComponentError


class _Dummy:
    """A dummy component."""

    Config = EmptyConfig

    def __init__(self, config: EmptyConfig) -> None:
        self.config = config


class _OfferL1:
    @hookimpl
    def prunetune_add_components(self, registry):  # type: ignore[no-untyped-def]
        registry.add_scorer("l1", _Dummy)


class _Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    @hookimpl
    def prunetune_trial_result(self, run, trial, metrics):  # type: ignore[no-untyped-def]
        self.seen.append(("trial", run, trial, metrics["accuracy"]))

    @hookimpl
    def prunetune_run_finished(self, run, summary):  # type: ignore[no-untyped-def]
        self.seen.append(("finished", run, summary["best"]))


def test_builtins_load_through_the_entry_point_group() -> None:
    registry = Host.create(environ={}).registry
    component = registry.get("scorer", "l1")
    assert component.plugin == "scorer.l1"
    assert component.distribution == "prunetune"
    for kind, name in [("pruner", "channel"), ("pruner", "mask"), ("distiller", "hinton"),
                       ("model", "resnet"), ("dataset", "fashion_mnist_demo")]:
        assert registry.get(kind, name).description


def test_disable_env_blocks_plugins_by_name() -> None:
    registry = Host.create(environ={"PRUNETUNE_DISABLE_PLUGINS": "scorer.l1, pruner.mask"}).registry
    assert "l1" not in registry.names("scorer") and "l2" in registry.names("scorer")
    assert registry.names("pruner") == [n for n in registry.names("pruner") if n != "mask"]


def test_two_plugins_offering_one_name_is_an_error_naming_both() -> None:
    host = Host.create(extra_plugins=[_OfferL1()], environ={})
    with pytest.raises(DuplicateComponentError, match=r"scorer 'l1' is offered by two plugins: .*scorer\.l1.*prunetune"):
        host.registry


def test_observer_hooks_reach_every_plugin() -> None:
    observer = _Observer()
    host = Host.create(extra_plugins=[observer], environ={})
    host.trial_result("run1", "t0", {"accuracy": 90.0})
    host.run_finished("run1", {"best": "t0"})
    assert observer.seen == [("trial", "run1", "t0", 90.0), ("finished", "run1", "t0")]


def test_a_third_party_distribution_adds_a_scorer(third_party_scorer: str) -> None:
    component = Host.create(environ={}).registry.get("scorer", third_party_scorer)
    assert (component.plugin, component.distribution, component.version) == ("lastfirst", "thirdparty-scorer", "1.2")
    assert component.description.startswith("Scores channels by reversed index")
