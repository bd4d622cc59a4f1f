"""Leaderboard rows of trials: the time split each trial reports."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray")

from prunetune.leaderboard import Leaderboard  # noqa: E402
from prunetune.search import SearchSpec  # noqa: E402
from prunetune.tuning import RowContext, concurrency, trial_row  # noqa: E402

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
