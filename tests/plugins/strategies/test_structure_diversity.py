"""The ``structure_diversity`` strategy: its searcher driven by hand, then in real searches."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from prunetune.components.spaces import DefineByRun, ModelStructure
from prunetune.components.strategy import Strategy
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.strategies import structure_diversity
from prunetune.plugins.strategies.structure_diversity import (
    FINISHED,
    GreedyKernelSearch,
    StructureDiversityStrategy,
    prunetune_add_components,
)
from prunetune.search_spaces.kernel_only import KernelOnlySpace
from prunetune.search_spaces.per_layer import PerLayerSpace

pytest.importorskip("ray.tune")

STRUCTURE = ModelStructure(groups={"stem": 8, "block": 16}, kernels={"stem": 3, "block.conv1": 3, "block.conv2": 3})
PER_LAYER = PerLayerSpace(PerLayerSpace.Config())
BOUND = DefineByRun(PER_LAYER, STRUCTURE)
BASELINE = BOUND.baseline(0.5)
#: The constructed case's best kernel sizes.
BEST = {"kernel:stem": 5, "kernel:block.conv1": 7, "kernel:block.conv2": 3}


def make(**options: object) -> StructureDiversityStrategy:
    registry = Registry()
    prunetune_add_components(registry)
    return registry.create("strategy", "structure_diversity", options)


def searcher(space: Any = PER_LAYER, **options: object) -> GreedyKernelSearch:
    """The strategy's searcher over ``space``, from the space's baseline."""
    return make(**options).searcher(DefineByRun(space, STRUCTURE), ["val_accuracy"], ["max"], 0,
                                    [DefineByRun(space, STRUCTURE).baseline(0.5)])


def result(loss: float, accuracy: float) -> dict[str, float]:
    return {"val_loss": loss, "val_accuracy": accuracy}


def suggest_all(search: GreedyKernelSearch, prefix: str) -> dict[str, dict[str, Any]]:
    """Every suggestion until the searcher waits: trial id -> parameters."""
    out = {}
    while isinstance(params := search.suggest(f"{prefix}{len(out)}"), dict):
        out[f"{prefix}{len(out)}"] = params
    return out


def by_size(suggested: Mapping[str, dict[str, Any]], layer: str) -> dict[int, str]:
    return {params[f"kernel:{layer}"]: trial_id for trial_id, params in suggested.items()}


def start(search: GreedyKernelSearch, accuracy: float = 50.0, loss: float = 1.0) -> None:
    """Run the baseline trial with the given result."""
    assert search.suggest("base") == BASELINE
    search.on_trial_complete("base", result(loss, accuracy))


def test_the_plugin_registers_the_strategy() -> None:
    registry = Registry()
    prunetune_add_components(registry)
    assert registry.names("strategy") == ["structure_diversity"]
    assert isinstance(make(), Strategy)
    assert "kernel size" in registry.get("strategy", "structure_diversity").description


@pytest.mark.parametrize("options", [{"kernel_sizes": "4"}, {"layers": "a,a"}, {"stop_early": "maybe"}, {"bogus": "1"}])
def test_bad_options_are_refused(options: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        make(**options)


def test_the_searcher_is_a_ray_searcher_and_the_plugin_does_not_import_ray() -> None:
    from ray.tune.search import Searcher

    assert isinstance(searcher(), Searcher)
    code = ("import sys; from prunetune.plugins.strategies import structure_diversity;"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_baseline_comes_first_and_the_searcher_waits_for_it() -> None:
    search = searcher()
    assert search.suggest("base") == BASELINE
    assert search.suggest("t1") is None
    assert search.suggest("t2") is None


def test_after_the_baseline_it_proposes_the_other_kernel_sizes_of_the_first_layer() -> None:
    search = searcher()
    start(search)
    suggested = suggest_all(search, "t")
    # Size 3 is the baseline itself: measured already, so only 5 and 7 are trained.
    assert sorted(by_size(suggested, "stem")) == [5, 7]
    assert all(p == BASELINE | {"kernel:stem": p["kernel:stem"]} for p in suggested.values())
    assert search.suggest("t9") is None  # waits for both


def test_a_size_the_current_structure_lacks_gives_three_new_candidates() -> None:
    search = searcher(kernel_sizes="5,7,9")
    start(search)
    assert sorted(by_size(suggest_all(search, "t"), "stem")) == [5, 7, 9]


def test_the_lowest_validation_loss_wins_even_over_a_higher_accuracy() -> None:
    search = searcher()
    start(search, accuracy=50.0, loss=1.0)
    sizes = by_size(suggest_all(search, "t"), "stem")
    search.on_trial_complete(sizes[7], result(0.9, 70.0))
    assert search.suggest("t9") is None  # 5 is still running
    search.on_trial_complete(sizes[5], result(0.5, 60.0))
    step = search.history[0]
    assert (step.layer, step.chosen, step.accepted) == ("stem", 5, True)
    assert search.current == BASELINE | {"kernel:stem": 5}
    assert search.current_outcome.val_accuracy == 60.0


def test_an_improvement_moves_on_to_the_next_layer_from_the_new_structure() -> None:
    search = searcher()
    start(search)
    sizes = by_size(suggest_all(search, "t"), "stem")
    search.on_trial_complete(sizes[5], result(0.5, 60.0))
    search.on_trial_complete(sizes[7], result(0.9, 40.0))
    following = suggest_all(search, "u")
    assert sorted(by_size(following, "block.conv1")) == [5, 7]
    assert all(p["kernel:stem"] == 5 and p["kernel:block.conv2"] == 3 for p in following.values())


def test_no_improvement_keeps_the_previous_structure_and_stops() -> None:
    search = searcher()
    start(search, accuracy=50.0, loss=1.0)
    sizes = by_size(suggest_all(search, "t"), "stem")
    search.on_trial_complete(sizes[5], result(0.5, 49.0))  # lowest loss, lower accuracy
    search.on_trial_complete(sizes[7], result(0.9, 55.0))
    assert search.suggest("u0") == FINISHED
    assert search.finished and search.current == BASELINE
    assert search.history[0].chosen == 5 and not search.history[0].accepted


def test_the_current_size_winning_is_no_improvement() -> None:
    search = searcher()
    start(search, accuracy=50.0, loss=0.1)
    for trial_id in suggest_all(search, "t"):
        search.on_trial_complete(trial_id, result(0.5, 90.0))
    assert search.history[0].chosen == 3 and search.suggest("u0") == FINISHED


def test_without_stop_early_a_layer_without_improvement_is_skipped() -> None:
    search = searcher(stop_early="false")
    start(search)
    for trial_id in suggest_all(search, "t"):
        search.on_trial_complete(trial_id, result(2.0, 10.0))
    following = suggest_all(search, "u")
    assert sorted(by_size(following, "block.conv1")) == [5, 7]
    assert all(p["kernel:stem"] == 3 for p in following.values())


def test_errors_and_missing_metrics_rank_last() -> None:
    search = searcher()
    start(search, accuracy=50.0, loss=1.0)
    sizes = by_size(suggest_all(search, "t"), "stem")
    search.on_trial_complete(sizes[5], None, error=True)
    search.on_trial_complete(sizes[7], {"val_accuracy": 0.0, "feasible": False})  # never trained
    assert search.history[0].chosen == 3 and search.finished


def test_only_the_chosen_layers_are_varied_in_the_order_of_the_model() -> None:
    search = searcher(layers="block.conv2,stem")
    start(search, accuracy=50.0)
    seen = []
    while suggested := suggest_all(search, f"t{len(seen)}-"):
        first, *others = suggested.values()
        (layer,) = {k for p in others for k in p if p[k] != first[k]}
        seen.append(layer)
        for trial_id, params in suggested.items():
            total = sum(v for k, v in params.items() if k.startswith("kernel:"))  # larger is better
            search.on_trial_complete(trial_id, result(1.0 / total, 40.0 + total))
    assert seen == ["kernel:stem", "kernel:block.conv2"]
    assert search.suggest("last") == FINISHED
    assert search.current == BASELINE | {"kernel:stem": 7, "kernel:block.conv2": 7}


def test_a_constructed_case_ends_on_the_known_best_kernel_sizes() -> None:
    """Loss falls as each layer nears its best size (stem 5, block.conv1 7, block.conv2 3)."""

    search = searcher()
    trials = run_to_end(search, measure)
    assert search.current == BASELINE | BEST
    assert [(s.layer, s.chosen, s.accepted) for s in search.history] == [
        ("stem", 5, True), ("block.conv1", 7, True), ("block.conv2", 3, False)]
    assert trials == 1 + 2 + 2 + 2  # the baseline, then two new sizes per layer


def measure(params: Mapping[str, Any]) -> dict[str, float]:
    """A constructed result: loss falls, and accuracy rises, as each layer nears its size in ``BEST``."""
    distance = sum(abs(params[k] - v) for k, v in BEST.items())
    return result(0.1 * distance, 90.0 - distance)


def run_to_end(search: GreedyKernelSearch, measure: Callable[[Mapping[str, Any]], dict[str, float]]) -> int:
    """Drive ``search`` to FINISHED, measuring each batch of suggestions; the number of trials."""
    trials = 0
    while True:
        suggested = suggest_all(search, f"b{trials}-")
        if not suggested:
            assert search.suggest("end") == FINISHED
            return trials
        trials += len(suggested)
        for trial_id, params in suggested.items():
            search.on_trial_complete(trial_id, measure(params))


def test_save_and_restore_mid_layer_continue_the_same_search(tmp_path: Path) -> None:
    search = searcher()
    start(search)
    sizes = by_size(suggest_all(search, "t"), "stem")
    search.on_trial_complete(sizes[5], result(0.5, 60.0))
    search.save(str(tmp_path / "state.pkl"))

    restored = searcher()
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.suggest("x") is None  # still waiting for size 7
    for s in (search, restored):
        s.on_trial_complete(sizes[7], result(0.9, 40.0))
    assert suggest_all(restored, "u") == suggest_all(search, "u")
    assert restored.history == search.history


def test_a_pickled_searcher_loads_in_a_fresh_process(tmp_path: Path) -> None:
    """``Tuner.restore`` unpickles the searcher in a new driver, before the class was ever made."""
    search = searcher()
    start(search)
    (tmp_path / "searcher.pkl").write_bytes(pickle.dumps(search))
    code = ("import pickle, sys; s = pickle.load(open(sys.argv[1], 'rb'));"
            "print(type(s).__name__, s.suggest('t')['kernel:stem'])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "searcher.pkl")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["StructureDiversitySearch", "5"]


def test_the_space_constants_join_every_suggestion() -> None:
    space = KernelOnlySpace(KernelOnlySpace.Config(ratio=0.25, kernel_sizes=(3, 5)))
    search = searcher(space)
    assert search.suggest("base") == DefineByRun(space, STRUCTURE).baseline(0.5) | {"ratio": 0.25}
    search.on_trial_complete("base", result(1.0, 50.0))
    assert search.suggest("t") == DefineByRun(space, STRUCTURE).baseline(0.5) | {"ratio": 0.25, "kernel:stem": 5}
    assert search.suggest("u") is None  # only one other size in this space


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make(layers="nope").searcher(BOUND, ["val_accuracy"], ["max"], 0, [BASELINE]),
         r"no resizable conv nope \(valid: stem, block.conv1, block.conv2\)"),
        (lambda: make().searcher(BOUND, ["val_accuracy", "macs"], ["max", "min"], 0, [BASELINE]), "accuracy only"),
        (lambda: make().searcher(BOUND, ["val_accuracy"], ["max"], 0, []), "baseline"),
        (lambda: make().searcher(lambda trial: None, ["val_accuracy"], ["max"], 0, [BASELINE]), "structure"),
    ],
)
def test_what_the_strategy_cannot_do_is_a_usage_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        call()


# --- real searches -------------------------------------------------------------------------


def _host() -> Any:
    from prunetune.host.manager import Host

    host = Host.create()
    if "structure_diversity" in host.registry.names("strategy"):
        return host
    return Host.create(extra_plugins=[structure_diversity])


def test_tune_runs_the_searcher_to_the_known_best_structure(tmp_path: Path, ray_cluster: Any) -> None:
    from ray import tune

    best_sizes = dict(BEST)

    def landscape(config: dict[str, Any]) -> None:
        # Local and self-contained: Ray ships it by value, as workers cannot import this file.
        distance = sum(abs(config[k] - v) for k, v in best_sizes.items())
        tune.report({"val_loss": 0.1 * distance, "val_accuracy": 90.0 - distance})

    search = searcher(layers="stem,block.conv1")
    tuner = tune.Tuner(
        landscape,
        tune_config=tune.TuneConfig(search_alg=search, num_samples=20, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="landscape", verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 1 + 2 + 2  # FINISHED when the layers run out, well before num_samples
    assert all(r.error is None for r in results)
    best = max(results, key=lambda r: r.metrics["val_accuracy"])
    assert best.config == BASELINE | {"kernel:stem": 5, "kernel:block.conv1": 7}


def test_a_search_lands_its_candidates_in_the_leaderboard(tmp_path: Path, ray_cluster: Any) -> None:
    from prunetune.results.leaderboard import Leaderboard
    from prunetune.searching.run import run_search
    from prunetune.searching.spec import SearchSpec

    spec = SearchSpec(
        name="diversity", strategy="structure_diversity", dataset_options={"limit": 300}, model_options={"width": 4},
        teacher_epochs=1, epochs=1, final_epochs=1, num_samples=7, max_macs=0.5, progress=False,
        address=ray_cluster.address, run_root=str(tmp_path / "runs"), leaderboard=str(tmp_path / "board"),
    )
    summary = run_search(spec, host=_host(), echo=lambda _: None)
    rows = Leaderboard(spec.leaderboard).rows(run_id="diversity")
    trials = [r for r in rows if r["kind"] == "trial"]
    assert len(trials) in (3, 5, 7)  # the baseline, then two new sizes per layer
    assert all(r["strategy"] == "structure_diversity" and r["status"] == "ok" for r in trials)
    params = [json.loads(r["params_json"]) for r in trials]
    baseline = next(p for p in params if all(v == 3 for k, v in p.items() if k.startswith("kernel:")))
    assert len({v for k, v in baseline.items() if k.startswith("ratio:")}) == 1  # the uniform plan
    # The first layer's other two sizes, everything else as in the baseline.
    assert baseline | {"kernel:stem.conv": 5} in params and baseline | {"kernel:stem.conv": 7} in params
    assert sum(r["kind"] == "final" for r in rows) == 1
    assert (Path(summary["run_dir"]) / "best_student.pt").is_file()
