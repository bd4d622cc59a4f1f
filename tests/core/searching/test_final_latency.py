"""The final stage never keeps a student slower than the uniform student of the MACs budget
(``--max-latency uniform``, the default with ``--max-macs``), timing them in isolation; timings
are injected here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from prunetune.results.leaderboard import Leaderboard  # noqa: E402
from prunetune.searching import final as final_module  # noqa: E402
from prunetune.searching.final import UNIFORM_TOLERANCE, finish_run, not_slower_than_uniform, train_final  # noqa: E402
from prunetune.searching.prepare import SearchRun, prepare_search  # noqa: E402
from prunetune.searching.spec import SearchSpec  # noqa: E402
from prunetune.searching.tuning import RowContext, trial_row  # noqa: E402
from prunetune.structure.plan import StudentPlan  # noqa: E402

TINY = dict(dataset_options={"limit": 300}, model_options={"width": 4}, teacher_epochs=1, epochs=1, final_epochs=1,
            max_macs=0.3, progress=False)
SLOW_KERNELS = {"layer1.0.conv1": 7}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> SearchRun:
    root = tmp_path_factory.mktemp("final-latency")
    spec = SearchSpec(run_root=str(root / "runs"), leaderboard=str(root / "board"), name="latency", **TINY)  # type: ignore[arg-type]
    return prepare_search(spec, echo=lambda _: None)


class FakeLatency:
    """Big kernels make a student slow; ``extra`` adds milliseconds per ratio; counts calls."""

    def __init__(self, extra: dict[float, float] | None = None) -> None:
        self.extra = extra or {}
        self.calls: list[StudentPlan] = []

    def __call__(self, plan: StudentPlan) -> float:
        self.calls.append(plan)
        return (100.0 if plan.kernels else 50.0) + self.extra.get(plan.ratio, 0.0)


def _rows(run: SearchRun, trials: list[tuple[str, StudentPlan, float]]) -> list[dict[str, Any]]:
    ctx = RowContext.of(run, None, "test machine")
    rows = []
    for trial_id, plan, accuracy in trials:
        metrics = {"plan": plan.to_json(), "params_json": json.dumps({}), "val_accuracy": accuracy,
                   "val_history": json.dumps([accuracy]), "epoch": run.spec.epochs, "macs": 1000,
                   "scorer": run.spec.scorer, "distiller": run.spec.distiller}
        rows.append(trial_row(ctx, trial_id, metrics, None))
    return rows


def _trials(run: SearchRun) -> list[tuple[str, StudentPlan, float]]:
    assert run.uniform_plan is not None
    wide = dataclasses.replace(run.uniform_plan, kernels=SLOW_KERNELS)
    return [("uniform", run.uniform_plan, 80.0), ("wide", wide, 90.0), ("wider", dataclasses.replace(wide, ratio=0.6), 85.0)]


def test_a_slower_best_gives_way_to_the_next_best_that_is_not(prepared: SearchRun) -> None:
    rows = _rows(prepared, _trials(prepared))
    lines: list[str] = []
    latency = FakeLatency()
    kept = not_slower_than_uniform(prepared, rows, [rows[1]], lines.append, latency)
    assert [r["trial_id"] for r in kept] == ["uniform"]
    assert len(lines) == 2 and "trial wide: 100.0 ms per batch of 256, slower than the uniform student's 50.0 ms" in lines[0]
    assert lines[0].endswith("finishing trial wider instead") and lines[1].endswith("finishing trial uniform instead")
    # Pareto points slower than uniform are dropped; the best is replaced as before.
    lines.clear()
    kept = not_slower_than_uniform(prepared, rows, [rows[1], rows[0], rows[2]], lines.append, latency)
    assert [r["trial_id"] for r in kept] == ["uniform"] and len(lines) == 3 and lines[-1].endswith("not kept")


def test_timing_noise_within_the_tolerance_is_not_slower(prepared: SearchRun) -> None:
    assert prepared.uniform_plan is not None
    close = dataclasses.replace(prepared.uniform_plan, ratio=0.7)  # another architecture
    rows = _rows(prepared, [("uniform", prepared.uniform_plan, 80.0), ("close", close, 90.0)])
    within = FakeLatency({0.7: 50.0 * UNIFORM_TOLERANCE * 0.9})
    assert [r["trial_id"] for r in not_slower_than_uniform(prepared, rows, [rows[1]], print, within)] == ["close"]
    beyond = FakeLatency({0.7: 50.0 * UNIFORM_TOLERANCE * 1.1})
    assert [r["trial_id"] for r in not_slower_than_uniform(prepared, rows, [rows[1]], print, beyond)] == ["uniform"]


def test_the_uniform_architecture_is_never_timed_against_itself(prepared: SearchRun) -> None:
    assert prepared.uniform_plan is not None
    # Ratios a hair apart keep the same channels: the same architecture, whatever a timing says.
    same = dataclasses.replace(prepared.uniform_plan, ratio=prepared.uniform_plan.ratio + 1e-3)
    rows = _rows(prepared, [("uniform", prepared.uniform_plan, 80.0), ("same", same, 90.0)])
    noisy = FakeLatency({same.ratio: 50.0})
    assert not_slower_than_uniform(prepared, rows, [rows[1]], print, noisy) == [rows[1]]
    assert noisy.calls == [prepared.uniform_plan]


def test_accuracy_alone_skips_the_check(prepared: SearchRun) -> None:
    rows = _rows(prepared, _trials(prepared))
    latency = FakeLatency()
    for spec in (dataclasses.replace(prepared.spec, max_latency="none"), dataclasses.replace(prepared.spec, max_latency=75.0)):
        run = dataclasses.replace(prepared, spec=spec)
        assert not_slower_than_uniform(run, rows, [rows[1]], print, latency) == [rows[1]]
    assert latency.calls == []


def test_when_no_trial_is_fast_enough_the_choice_stands(prepared: SearchRun) -> None:
    rows = _rows(prepared, _trials(prepared))[1:]  # the uniform trial failed
    lines: list[str] = []
    assert not_slower_than_uniform(prepared, rows, [rows[0]], lines.append, FakeLatency()) == [rows[0]]
    assert lines[-1].startswith("no trial's student is as fast as the uniform student") and lines[-1].endswith("keeping trial wide")


def test_finish_run_trains_the_fastest_enough_best_trial(prepared: SearchRun, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run = dataclasses.replace(prepared, run_dir=tmp_path / "run")
    run.run_dir.mkdir()
    board = Leaderboard(tmp_path / "board")
    for row in _rows(run, _trials(run)):
        board.write([row], key=f"{run.run_id}-{row['trial_id']}")
    trained: list[StudentPlan] = []

    def local(run: SearchRun, candidate: Any) -> Any:  # in this process, not on Ray
        trained.append(candidate.plan)
        return train_final(run.inputs, candidate, run.spec.final_epochs)

    monkeypatch.setattr(final_module, "_train_remote", local)
    lines: list[str] = []
    result = finish_run(run, board, RowContext.of(run, None, "test machine"), lines.append, latency=FakeLatency())
    assert trained == [run.uniform_plan] and [Path(p).name for p in result["students"]] == ["best_student.pt"]
    assert any("finishing trial uniform instead" in line for line in lines)
    finals = [r for r in board.rows(run_id=run.run_id) if r["kind"] == "final"]
    assert [r["trial_id"] for r in finals] == ["final-uniform"]
