from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from prunetune.errors import UsageError
from prunetune.results.leaderboard import Leaderboard, require_run
from prunetune.results.rows import format_rows
from prunetune.results.schema import COLUMNS, SCHEMA
from tests.core.results.board_rows import T0, row


def test_round_trip_keeps_values_and_nulls(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path / "lb")
    plan = {"ratio": 0.5, "ratios": {"layer1.0.conv1": 0.25}, "kernels": {"conv1": 5}, "round_to": None}
    board.write([row(plan=plan, test_accuracy=None, plugin_versions={"prunetune": "0.1.0"},
                     params_json={"ratio": 0.5}, epochs=3, seed=7, latency_b256_ms=float("nan"))], key="r1-t0")
    [got] = board.rows()
    assert set(got) == set(COLUMNS)
    assert got["time"] == T0 and got["time"].tzinfo is not None
    assert got["val_accuracy"] == 80.0 and got["macs"] == 1_000_000 and got["epochs"] == 3 and got["seed"] == 7
    assert got["test_accuracy"] is None and got["latency_b256_ms"] is None and got["error"] is None
    assert got["node"] is None and got["git_revision"] is None
    assert json.loads(got["plan"]) == plan
    assert json.loads(got["ratios"]) == {"layer1.0.conv1": 0.25}  # filled from the plan
    assert json.loads(got["kernels"]) == {"conv1": 5}
    assert got["macs_fraction"] == pytest.approx(0.25)  # macs / teacher_macs
    assert json.loads(got["plugin_versions"]) == {"prunetune": "0.1.0"}


def test_files_carry_the_documented_schema(tmp_path: Path) -> None:
    path = Leaderboard(tmp_path).write([row()], key="k")
    schema = pq.read_schema(path)
    assert schema.names == SCHEMA.names
    assert all(f.metadata and f.metadata[b"doc"] for f in schema)


def test_time_defaults_to_now_takes_epoch_seconds_and_plan_json(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path)
    before = dt.datetime.now(dt.timezone.utc)
    board.write([{k: v for k, v in row("a").items() if k != "time"}], key="a")
    board.write([row("b", time=0.0, plan='{"ratio": 0.5, "kernels": {"conv1": 3}}')], key="b")
    got = {r["trial_id"]: r["time"] for r in board.rows()}
    assert got["a"] >= before.replace(microsecond=0)
    assert got["b"] == dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    assert json.loads(board.rows(run_id="r1")[0]["kernels"]) == {"conv1": 3}  # from a plan given as JSON


def test_filters_and_runs(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path)
    board.write([row("t0", "r1", 1), row("t1", "r1", 2)], key="r1-trials")
    board.write([row("final", "r1", 3, kind="final", test_accuracy=81.0)], key="r1-final")
    board.write([row("t0", "r2", 0, model="vgg"), row("t1", "r2", 5, model="vgg", dataset="cifar10")], key="r2")
    assert [r["trial_id"] for r in board.rows(run_id="r1")] == ["t0", "t1", "final"]
    assert [r["trial_id"] for r in board.rows(kind="final")] == ["final"]
    assert {r["run_id"] for r in board.rows(model="vgg")} == {"r2"}
    assert [(r["run_id"], r["trial_id"]) for r in board.rows(model="vgg", dataset="cifar10")] == [("r2", "t1")]
    assert board.rows(model="mobilenet") == []
    times = [r["time"] for r in board.rows()]
    assert times == sorted(times)
    assert board.runs() == ["r2", "r1"]  # by when they started


def test_missing_or_empty_folder_reads_nothing(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path / "nowhere")
    assert board.rows() == [] and board.runs() == [] and not board.has("x")
    (tmp_path / "empty").mkdir()
    assert Leaderboard(tmp_path / "empty").rows() == []


def test_files_from_before_the_time_split_read_with_nulls(tmp_path: Path) -> None:
    # A file written when the schema had overhead_seconds but no train/prune seconds.
    board = Leaderboard(tmp_path)
    path = board.write([row("old", overhead_seconds=2.5)], key="old")
    old = pq.read_table(path).drop_columns(["train_seconds", "prune_seconds"])
    pq.write_table(old, path)
    board.write([row("new", seconds=1, train_seconds=9.0, prune_seconds=1.0, overhead_seconds=0.5)], key="new")
    split = {r["trial_id"]: (r["train_seconds"], r["prune_seconds"], r["overhead_seconds"]) for r in board.rows()}
    assert split == {"old": (None, None, 2.5), "new": (9.0, 1.0, 0.5)}


def test_val_history_round_trips_and_files_from_before_it_read_with_null(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path)
    path = board.write([row("old", val_history="[70.0, 80.0]")], key="old")
    old = pq.read_table(path).drop_columns(["val_history"])  # the schema before val_history
    assert "val_history" not in old.schema.names
    pq.write_table(old, path)
    board.write([row("new", seconds=1, val_history=[71.5, 82.25])], key="new")  # a list is encoded
    got = {r["trial_id"]: r["val_history"] for r in board.rows()}
    assert got["old"] is None and json.loads(got["new"]) == [71.5, 82.25]
    assert board.check() == []
    assert json.loads(format_rows(board.rows(), "json", ["trial_id", "val_history"])) == [
        {"trial_id": "old", "val_history": None}, {"trial_id": "new", "val_history": [71.5, 82.25]}]
    with pytest.raises(ValueError, match="val_history"):
        board.write([row("bad", val_history="[70.0,")], key="bad")


def test_writing_a_key_again_replaces_its_rows(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path)
    board.write([row("t0", status="stopped", val_accuracy=50.0)], key="r1-t0")
    assert board.has("r1-t0")
    board.write([row("t0", val_accuracy=82.5)], key="r1-t0")
    [got] = board.rows()
    assert got["val_accuracy"] == 82.5 and got["status"] == "ok"


def test_dot_files_partial_writes_and_other_files_are_ignored(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path)
    board.write([row()], key="good")
    (tmp_path / ".good.parquet.123.abc.tmp").write_bytes(b"PAR1 half a file")
    (tmp_path / ".hidden.parquet").write_bytes(b"not parquet")
    (tmp_path / "pareto.png").write_bytes(b"\x89PNG")
    assert [r["trial_id"] for r in board.rows()] == ["t0"]


def test_keys_become_distinct_safe_file_names(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path)
    names = {board.path_for(k).name for k in ("run/a b", "run_a_b", "run_a b", ".hidden", "x" * 400)}
    assert len(names) == 5
    assert all(n.endswith(".parquet") and not n.startswith(".") and "/" not in n and len(n) < 200 for n in names)
    assert board.path_for("r1-t0.3").name == "r1-t0.3.parquet"
    board.write([row()], key="run/a b")
    assert board.has("run/a b") and not board.has("run_a_b")
    with pytest.raises(ValueError, match="empty"):
        board.path_for("")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"accuracy": 80.0}, "unknown leaderboard column.*accuracy"),
        ({"kind": "best"}, "kind 'best'"),
        ({"status": "done"}, "status 'done'"),
        ({"run_id": None}, "lacks run_id"),
        ({"macs": 1.5}, "integer"),
        ({"plan": "{not json"}, "'plan' holds invalid JSON"),
        ({"model": 3}, "'model' takes text"),
    ],
)
def test_bad_rows_are_refused(tmp_path: Path, bad: dict[str, Any], message: str) -> None:
    board = Leaderboard(tmp_path)
    with pytest.raises(ValueError, match=message):
        board.write([row(**bad)], key="k")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp file left


def test_nothing_to_write_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no leaderboard rows"):
        Leaderboard(tmp_path).write([], key="k")


def _writer(folder: str, run: str, n: int) -> None:
    board = Leaderboard(folder)
    for i in range(n):
        board.write([row(f"t{i}", run, i)], key=f"{run}-t{i}")
        board.write([row(f"t{i}", run, i, val_accuracy=90.0)], key=f"{run}-t{i}")  # a resume's rewrite


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), run, 20)) for run in ("ra", "rb")]
    for p in procs:
        p.start()
    board = Leaderboard(tmp_path)
    while any(p.is_alive() for p in procs):
        rows = board.rows()  # reading during the writes never meets a half-written file
        assert len({(r["run_id"], r["trial_id"]) for r in rows}) == len(rows)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    rows = board.rows()
    assert sorted((r["run_id"], r["trial_id"]) for r in rows) == sorted(
        (run, f"t{i}") for run in ("ra", "rb") for i in range(20)
    )
    assert {r["val_accuracy"] for r in rows} == {90.0}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_require_run(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path)
    with pytest.raises(UsageError, match=r"no run x in leaderboard .* \(runs: none\)"):
        require_run(board, "x")
    board.write([row(run="a", seconds=0)], key="a")
    board.write([row(run="b", seconds=1)], key="b")
    assert [r["run_id"] for r in require_run(board, "b")] == ["b"]
    with pytest.raises(UsageError, match=r"no run x in leaderboard .* \(runs: a, b\)"):
        require_run(board, "x")


def test_importing_the_leaderboard_stays_cheap() -> None:
    code = (
        "import sys, prunetune.results.leaderboard, prunetune.results.plot;"
        "print(','.join(m for m in ('torch', 'ray', 'optuna', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
