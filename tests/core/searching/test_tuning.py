"""Leaderboard rows of trials: the time split each trial reports."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("ray")

from prunetune.results.leaderboard import Leaderboard  # noqa: E402
from prunetune.searching.final import choose_trials  # noqa: E402
from prunetune.searching.spec import SearchSpec  # noqa: E402
from prunetune.searching.tuning import RowContext, _scheduler, concurrency, trial_row  # noqa: E402

CTX = RowContext("run", SearchSpec(epochs=2), 4_000_000, 90.0, {"scorer.l1": "prunetune 0.1.0"}, None, "cpu")


def test_a_trial_row_carries_the_time_split(tmp_path: Path) -> None:
    metrics = {"epoch": 2, "val_accuracy": 80.0, "macs": 1_000_000, "trial_seconds": 10.0, "train_seconds": 8.5,
               "prune_seconds": 1.0, "overhead_seconds": 0.5}
    board = Leaderboard(tmp_path / "board")
    board.write([trial_row(CTX, "t1", metrics, None)], key="run-t1")
    [row] = board.rows()
    assert row["status"] == "ok"
    split = (row["wall_seconds"], row["train_seconds"], row["prune_seconds"], row["overhead_seconds"])
    assert split == (10.0, 8.5, 1.0, 0.5)


def test_a_row_names_the_hardware_that_trained_it() -> None:
    assert trial_row(CTX, "t1", {"hardware": "NVIDIA H100"}, None)["hardware"] == "NVIDIA H100"
    assert trial_row(CTX, "t2", {}, None)["hardware"] == "cpu"  # a trial that never reported: the driver's


def test_rows_without_a_time_split_have_nulls(tmp_path: Path) -> None:
    # Final students (and trials that failed before reporting) carry no split.
    row = trial_row(CTX, "final-t1", {"epoch": 5, "val_accuracy": 81.0, "status": "ok"}, None, kind="final")
    assert row["train_seconds"] is None and row["prune_seconds"] is None and row["overhead_seconds"] is None
    board = Leaderboard(tmp_path / "board")
    board.write([row], key="run-final-t1")
    assert board.rows()[0]["prune_seconds"] is None


def test_a_trial_row_carries_the_accuracy_of_every_epoch(tmp_path: Path) -> None:
    stopped = {"epoch": 1, "val_accuracy": 75.0, "val_history": "[75.0]", "macs": 500}
    board = Leaderboard(tmp_path / "board")
    board.write([trial_row(CTX, "t1", {"epoch": 2, "val_accuracy": 80.0, "val_history": "[70.0, 80.0]"}, None)],
                key="run-t1")
    board.write([trial_row(CTX, "t2", stopped, None)], key="run-t2")
    rows = {r["trial_id"]: r for r in board.rows()}
    assert json.loads(rows["t1"]["val_history"]) == [70.0, 80.0] and rows["t1"]["status"] == "ok"
    assert json.loads(rows["t2"]["val_history"]) == [75.0] and rows["t2"]["status"] == "stopped"
    assert [r["trial_id"] for r in choose_trials(list(rows.values()), False)] == ["t2"]  # 75 against 70 at epoch 1
    assert trial_row(CTX, "t3", {"epoch": 0, "feasible": False}, None)["val_history"] is None


def _rung(scheduler: Any, trial_id: str, epoch: int, accuracy: float) -> str:
    trial = SimpleNamespace(trial_id=trial_id)
    if epoch == 1:
        scheduler.on_trial_add(None, trial)
    return scheduler.on_trial_result(None, trial, {"epoch": epoch, "val_accuracy": accuracy})


def test_asha_has_one_rung_at_epoch_1_for_two_epoch_trials() -> None:
    from ray.tune.schedulers import TrialScheduler

    assert _scheduler(SearchSpec(epochs=2)) is None  # fifo
    asha = _scheduler(SearchSpec(epochs=2, scheduler="asha"))
    [bracket] = asha._brackets
    assert [t for t, _ in bracket._rungs if t < 2] == [1]
    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    # A trial goes on when it is at least the median of the epoch-1 accuracies before it.
    assert [_rung(asha, t, 1, acc) for t, acc in [("a", 70.0), ("b", 80.0), ("c", 76.0), ("d", 72.0)]] == [
        go, go, go, stop]
    assert _rung(asha, "a", 2, 81.0) == stop  # the last epoch ends the trial
    assert [t for t, _ in _scheduler(SearchSpec(epochs=8, scheduler="asha"))._brackets[0]._rungs if t < 8] == [4, 2, 1]


@pytest.mark.parametrize(
    ("changes", "resources", "expected"),
    [
        ({}, {"CPU": 2.0}, 2),
        ({"cpus_per_trial": 0.5}, {"CPU": 2.0}, 4),
        ({"cpus_per_trial": 3.0}, {"CPU": 2.0}, 1),  # never below one
        ({"gpus_per_trial": 0.5}, {"CPU": 16.0, "GPU": 1.0}, 2),  # the scarcer resource decides
        ({"max_concurrent": 3}, {"CPU": 16.0}, 3),  # the user's limit wins
    ],
)
def test_concurrency_fills_the_cluster_unless_limited(changes, resources, expected) -> None:
    assert concurrency(SearchSpec(**changes), resources) == expected
