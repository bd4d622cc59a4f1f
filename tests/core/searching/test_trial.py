"""One trial outside Ray: the per-worker cache and the accounting of its time."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from prunetune.jobs.spec import JobSpec
from prunetune.searching import trial as trial_module
from prunetune.searching.prepare import SearchRun, prepare_search
from prunetune.searching.spec import SearchSpec
from prunetune.searching.trial import TrialClock, TrialInputs, run_trial, worker_state
from prunetune.training.recipe import TrainRecipe

TINY = dict(dataset_options={"limit": 300}, model_options={"width": 4}, teacher_epochs=1, epochs=2,
            max_macs=0.3, progress=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> SearchRun:
    root = tmp_path_factory.mktemp("trial")
    spec = SearchSpec(run_root=str(root / "runs"), leaderboard=str(root / "board"), **TINY)  # type: ignore[arg-type]
    return prepare_search(spec, echo=lambda _: None)


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``run_trial`` reports to Tune, captured instead of sent (with whether a checkpoint came)."""
    tune = pytest.importorskip("ray.tune")
    seen: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], checkpoint: Any = None) -> None:
        files = sorted(p.name for p in Path(checkpoint.path).iterdir()) if checkpoint is not None else []
        seen.append({**metrics, "_checkpoint": files})

    monkeypatch.setattr(tune, "report", report)
    return seen


def test_the_token_is_new_per_instance_and_survives_pickling(prepared: SearchRun) -> None:
    inputs = prepared.inputs
    assert pickle.loads(pickle.dumps(inputs)).token == inputs.token  # as through Ray's object store
    changed = dataclasses.replace(inputs, spec=dataclasses.replace(inputs.spec, epochs=inputs.spec.epochs + 1))
    assert changed.token != inputs.token
    with pytest.raises(TypeError):
        TrialInputs(**{f.name: getattr(inputs, f.name) for f in dataclasses.fields(inputs)})  # token is not an argument


def test_the_worker_keeps_registry_and_teacher_per_inputs_token(prepared: SearchRun,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trial_module, "_STATE", None)
    inputs = prepared.inputs
    first = worker_state(inputs)
    again = worker_state(pickle.loads(pickle.dumps(inputs)))
    assert again is first and again.registry is first.registry and again.teacher is first.teacher
    other = worker_state(dataclasses.replace(inputs))
    assert other.token != first.token
    assert other.registry is not first.registry and other.teacher is not first.teacher
    assert worker_state(inputs) is not first  # only the latest inputs are kept
    expected = prepared.teacher.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in other.teacher.state_dict().items())
    assert not other.teacher.training and other.cpu_teacher is other.teacher  # one CPU teacher on a CPU run


class _FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


def test_the_clock_splits_the_trial_time(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeTime()
    monkeypatch.setattr(trial_module, "time", fake)
    clock = TrialClock()
    fake.now += 1.0  # overhead
    with clock.timing("prune"):
        fake.now += 2.0
    clock.start("train")
    fake.now += 4.0
    assert clock.seconds() == {"trial_seconds": 7.0, "train_seconds": 4.0, "prune_seconds": 2.0,
                               "overhead_seconds": 1.0}  # a running part counts up to now
    clock.stop()
    fake.now += 0.5  # reporting: overhead
    clock.start("train")
    fake.now += 8.0
    clock.stop()
    assert clock.seconds() == {"trial_seconds": 15.5, "train_seconds": 12.0, "prune_seconds": 2.0,
                               "overhead_seconds": 1.5}


def test_each_epoch_reports_seconds_that_add_up(prepared: SearchRun, reports: list[dict[str, Any]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trial_module, "_STATE", None)
    run_trial(dict(prepared.baseline or {}), prepared.inputs)
    state = trial_module._STATE
    run_trial(dict(prepared.baseline or {}), prepared.inputs)
    assert trial_module._STATE is state  # the second trial reused the worker's registry and teacher
    assert [r["epoch"] for r in reports] == [1, 2, 1, 2]
    for r in reports:
        assert r["trial_seconds"] == pytest.approx(r["train_seconds"] + r["prune_seconds"] + r["overhead_seconds"])
        assert r["train_seconds"] > 0 and r["prune_seconds"] > 0 and r["overhead_seconds"] >= 0
        assert r["_checkpoint"] == ["student.pt"] and r["feasible"]
    for first, second in (reports[0:2], reports[2:4]):
        assert second["train_seconds"] > first["train_seconds"] and second["prune_seconds"] == first["prune_seconds"]
    # Both trials built the same student from the same (cached) teacher.
    assert reports[1]["val_accuracy"] == reports[3]["val_accuracy"] and reports[1]["plan"] == reports[3]["plan"]
    assert json.loads(reports[1]["plan"])["ratios"]


def test_each_epoch_reports_the_accuracies_so_far(prepared: SearchRun, reports: list[dict[str, Any]]) -> None:
    run_trial(dict(prepared.baseline or {}), prepared.inputs)
    first, second = reports
    # A JSON string, epoch 1 first: Tune keeps it as one value, the leaderboard as one column.
    assert isinstance(first["val_history"], str)
    assert json.loads(first["val_history"]) == [first["val_accuracy"]]
    assert json.loads(second["val_history"]) == [first["val_accuracy"], second["val_accuracy"]]


def test_an_infeasible_trial_reports_its_time_as_overhead(prepared: SearchRun, reports: list[dict[str, Any]]) -> None:
    inputs = dataclasses.replace(prepared.inputs, budget_macs=1)
    run_trial(dict(prepared.baseline or {}), inputs)
    [r] = reports
    assert r["feasible"] is False and r["epoch"] == 0
    assert r["train_seconds"] == r["prune_seconds"] == 0.0
    assert r["overhead_seconds"] == pytest.approx(r["trial_seconds"]) and r["trial_seconds"] > 0


def test_a_trial_trains_with_the_runs_schedule_and_nesterov(tmp_path: Path, reports: list[dict[str, Any]],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SearchSpec(run_root=str(tmp_path / "runs"), leaderboard=str(tmp_path / "board"), schedule="cosine",
                      nesterov=False, **TINY)  # type: ignore[arg-type]
    run = prepare_search(spec, echo=lambda _: None)
    inputs = run.inputs
    assert (inputs.spec.schedule, inputs.spec.nesterov) == ("cosine", False)  # not the defaults
    recipes: list[TrainRecipe] = []
    real = trial_module.distill

    def spy(*args: Any, **kwargs: Any) -> Any:
        recipes.append(args[5])
        return real(*args, **kwargs)

    monkeypatch.setattr(trial_module, "distill", spy)
    monkeypatch.setattr(trial_module, "_STATE", None)
    run_trial(dict(run.baseline or {}), inputs)
    [recipe] = recipes
    assert (recipe.schedule, recipe.nesterov, recipe.lr) == ("cosine", False, spec.lr)
    assert [r["epoch"] for r in reports] == [1, 2] and "error" not in reports[-1]
    assert reports[-1]["val_accuracy"] > 0


def test_trial_inputs_hold_the_runs_spec_not_copies_of_its_settings(prepared: SearchRun) -> None:
    assert prepared.inputs.spec is prepared.spec
    copied = {f.name for f in dataclasses.fields(TrialInputs)} & {f.name for f in dataclasses.fields(SearchSpec)}
    # ``model`` is the resolved ModelSpec (options, input shape, classes), not the spec's name.
    assert not copied - {"model"}, f"TrialInputs repeats the spec's settings {sorted(copied)}"
    assert (prepared.inputs.spec.schedule, prepared.inputs.spec.nesterov) == (JobSpec.schedule, JobSpec.nesterov)


def test_a_trial_reports_the_tables_latency_not_a_timing(prepared: SearchRun, reports: list[dict[str, Any]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from prunetune.structure.plan import StudentPlan
    from prunetune.student.budget import MacsCounter

    inputs = prepared.inputs
    assert inputs.latency_table is not None and prepared.uniform_plan is not None
    table = inputs.latency_table.bind(MacsCounter(prepared.teacher, inputs.train_x[:1]))
    # --max-macs without --max-latency: the uniform student's predicted latency is the cap.
    assert prepared.spec.latency_cap == "uniform"
    assert inputs.budget_latency_ms == pytest.approx(table.predict(prepared.uniform_plan))
    monkeypatch.setattr(trial_module, "_STATE", None)
    run_trial(dict(prepared.baseline or {}), inputs)
    assert len(reports) == inputs.spec.epochs
    for r in reports:
        assert r["latency_b256_ms"] == pytest.approx(table.predict(StudentPlan.from_dict(json.loads(r["plan"]))))
        assert r["latency_b256_ms"] <= inputs.budget_latency_ms * (1 + 1e-9)
        assert "latency_b1_ms" not in r  # only final students are timed


def test_a_trial_repairs_its_plan_to_the_latency_budget(prepared: SearchRun, reports: list[dict[str, Any]],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from prunetune.structure.plan import StudentPlan
    from prunetune.student.budget import MacsCounter

    table = prepared.inputs.latency_table.bind(MacsCounter(prepared.teacher, prepared.inputs.train_x[:1]))  # type: ignore[union-attr]
    cap = table.predict(StudentPlan(ratio=0.75))
    monkeypatch.setattr(trial_module, "_STATE", None)
    one_epoch = dataclasses.replace(prepared.inputs.spec, epochs=1)
    run_trial(dict(prepared.baseline or {}), dataclasses.replace(prepared.inputs, budget_latency_ms=cap, spec=one_epoch))
    [r] = reports
    assert r["feasible"] and r["repaired"] and r["latency_b256_ms"] <= cap * (1 + 1e-9)
    run_trial(dict(prepared.baseline or {}), dataclasses.replace(prepared.inputs, budget_latency_ms=1e-6, spec=one_epoch))
    assert reports[-1]["feasible"] is False and reports[-1]["latency_b256_ms"] > 1e-6  # out of reach: never trained
