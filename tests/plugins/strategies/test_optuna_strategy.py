"""The ``optuna`` strategy's searcher, driven directly through suggest / on_trial_complete."""

from __future__ import annotations

import pytest

from prunetune.components.spaces import Candidate, ModelStructure
from prunetune.components.strategy import Strategy
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.strategies.optuna import SAMPLERS, OptunaStrategy, prunetune_add_components
from prunetune.search_spaces.per_layer import PerLayerSpace

pytest.importorskip("ray.tune.search.optuna")


def space(trial) -> None:
    trial.suggest_float("ratio:a", 0.0, 0.8, step=0.05)
    trial.suggest_categorical("kernel:b", (3, 5, 7))


def make(**options: object) -> OptunaStrategy:
    registry = Registry()
    prunetune_add_components(registry)
    return registry.create("strategy", "optuna", options)


def run(searcher, n: int, metrics=("acc",)) -> list[dict]:
    """Suggest ``n`` trials, completing each with a result made from its parameters."""
    suggested = []
    for i in range(n):
        params = searcher.suggest(f"t{i}")
        suggested.append(params)
        result = {"acc": 1.0 - params["ratio:a"], "macs": params["kernel:b"] * (1.0 - params["ratio:a"])}
        searcher.on_trial_complete(f"t{i}", {m: result[m] for m in metrics})
    return suggested


def test_the_plugin_registers_the_strategy():
    registry = Registry()
    prunetune_add_components(registry)
    assert registry.names("strategy") == ["optuna"]
    assert isinstance(make(), Strategy)
    assert registry.get("strategy", "optuna").description


@pytest.mark.parametrize("options", [{"sampler": "cmaes"}, {"n_startup_trials": "-1"}, {"bogus": "1"}])
def test_bad_options_are_refused(options):
    with pytest.raises(UsageError):
        make(**options)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_seed_same_suggestions(sampler):
    strategy = make(sampler=sampler, n_startup_trials="2")
    first = run(strategy.searcher(space, ["acc"], ["max"], seed=3), 5)
    again = run(strategy.searcher(space, ["acc"], ["max"], seed=3), 5)
    other = run(strategy.searcher(space, ["acc"], ["max"], seed=4), 5)
    assert first == again
    assert first != other
    assert all(0.0 <= p["ratio:a"] <= 0.8 and p["kernel:b"] in (3, 5, 7) for p in first)


def test_points_to_evaluate_come_first():
    points = [{"ratio:a": 0.5, "kernel:b": 3}, {"ratio:a": 0.25, "kernel:b": 7}]
    searcher = make().searcher(space, ["acc"], ["max"], seed=0, points_to_evaluate=points)
    assert run(searcher, 3)[:2] == points


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_several_metrics_make_a_multi_objective_study(sampler):
    searcher = make(sampler=sampler, n_startup_trials="2").searcher(
        space, ["acc", "macs"], ["max", "min"], seed=0
    )
    run(searcher, 4, metrics=("acc", "macs"))
    assert searcher.metric == ["acc", "macs"]
    # OptunaSearch logs, rather than raises, a result the study refuses: look at the study.
    study = searcher._ot_study
    assert len(study.directions) == 2
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert all(len(t.values) == 2 for t in study.trials)


@pytest.mark.parametrize(("metrics", "modes"), [([], []), (["acc"], ["max", "min"]), (["acc"], ["up"])])
def test_mismatched_metrics_and_modes_are_refused(metrics, modes):
    with pytest.raises(ValueError):
        make().searcher(space, metrics, modes, seed=0)


def test_a_search_space_baseline_is_the_first_trial():
    structure = ModelStructure(groups={"stem.conv": 8, "layer1.0.conv1": 16}, kernels={"stem.conv": 3})
    per_layer = PerLayerSpace(PerLayerSpace.Config(scorers=("l1", "l2")))
    baseline = per_layer.baseline(structure, 0.5).params()
    searcher = make().searcher(
        lambda trial: per_layer.suggest(trial, structure), ["acc"], ["max"], seed=0,
        points_to_evaluate=[baseline],
    )
    first, second = searcher.suggest("t0"), searcher.suggest("t1")
    assert first == baseline
    assert set(second) == set(baseline)
    assert Candidate.from_params(first).plan.ratios == {"stem.conv": 0.5, "layer1.0.conv1": 0.5}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_searcher_pickles_and_goes_on_after_unpickling(sampler: str) -> None:
    """Tune pickles the searcher with its sampler (Optuna 5.1's NSGA-II holds a thread lock)."""
    import pickle
    import subprocess
    import sys

    from ray import cloudpickle

    strategy = make(sampler=sampler, n_startup_trials="2")
    searcher = strategy.searcher(space, ["acc", "macs"], ["max", "min"], seed=1)
    run(searcher, 3, metrics=("acc", "macs"))
    copy = cloudpickle.loads(cloudpickle.dumps(searcher))
    assert run(copy, 2, metrics=("acc", "macs"))
    # A fresh process, as Tuner.restore in a new driver, finds the sampler's class by name.
    blob = pickle.dumps(strategy.sampler(seed=1))
    code = "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); print(type(s).__mro__[2].__name__)"
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, check=True)
    assert out.stdout.decode().strip().endswith("Sampler")


def test_results_of_a_trial_the_searcher_never_suggested_are_ignored() -> None:
    """A restored experiment can hold a trial the searcher's older snapshot never suggested."""
    from ray import cloudpickle

    searcher = make().searcher(space, ["acc"], ["max"], seed=0)
    run(searcher, 1)
    searcher.on_trial_result("restored", {"acc": 0.5})
    searcher.on_trial_complete("restored", {"acc": 0.5})
    copy = cloudpickle.loads(cloudpickle.dumps(searcher))
    copy.on_trial_result("restored-too", {"acc": 0.5})
    assert run(copy, 2)
