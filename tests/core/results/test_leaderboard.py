from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prunetune.cli import main
from prunetune.errors import UsageError
from prunetune.results.leaderboard import Leaderboard, require_run
from prunetune.results.rows import format_rows
from prunetune.results.schema import COLUMNS, SCHEMA, TABLE_COLUMNS

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def row(trial: str = "t0", run: str = "r1", seconds: float = 0, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": run, "trial_id": trial, "kind": "trial", "status": "ok",
        "time": T0 + dt.timedelta(seconds=seconds), "model": "resnet", "dataset": "fashion_mnist_demo",
        "val_accuracy": 80.0, "macs": 1_000_000, "teacher_macs": 4_000_000,
    }
    return {**base, **over}


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


# ----------------------------------------------------------------------------- bad files

BAD = {
    "x.parquet": "not Parquet",
    "truncated.parquet": "truncated or corrupt Parquet",
    "types.parquet": "column val_accuracy is string, expected double",
    "columns.parquet": "lacks column(s) run_id, trial_id, kind, time, status",
}


def _good_and_bad(folder: Path) -> Leaderboard:
    """Two runs of good rows, and the four kinds of bad file in :data:`BAD`."""
    board = Leaderboard(folder, warn=lambda line: pytest.fail(f"unexpected warning {line}"))
    good = board.write([row("t0", "r1", 0, val_accuracy=80.0, macs=1_000_000),
                        row("t1", "r1", 1, val_accuracy=85.0, macs=2_000_000)], key="r1")
    board.write([row("t0", "r2", 2, val_accuracy=82.0, macs=1_500_000)], key="r2")
    (folder / "x.parquet").write_bytes(random.Random(0).randbytes(4096))
    data = good.read_bytes()
    (folder / "truncated.parquet").write_bytes(data[: len(data) // 2])
    pq.write_table(pa.table({"run_id": ["r9"], "trial_id": ["t0"], "kind": ["trial"], "status": ["ok"],
                             "time": [T0], "val_accuracy": ["high"]}), folder / "types.parquet")
    pq.write_table(pa.table({"accuracy": [99.0], "trial": ["t0"]}), folder / "columns.parquet")
    return board


GOOD = [("r1", "t0", 80.0), ("r1", "t1", 85.0), ("r2", "t0", 82.0)]


def _keys(rows: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    return [(r["run_id"], r["trial_id"], r["val_accuracy"]) for r in rows]


def test_bad_files_are_skipped_with_one_warning(tmp_path: Path) -> None:
    _good_and_bad(tmp_path)
    warnings: list[str] = []
    board = Leaderboard(tmp_path, warn=warnings.append)
    clean = tmp_path / "clean"
    clean.mkdir()
    for name in ("r1.parquet", "r2.parquet"):
        shutil.copy(tmp_path / name, clean / name)
    assert _keys(board.rows()) == GOOD and board.rows() == Leaderboard(clean).rows()
    [line] = warnings
    assert "\n" not in line and line.startswith("prunetune: warning: skipped 4 unreadable leaderboard file(s)")
    assert "columns.parquet (lacks column(s) run_id" in line and "truncated.parquet (truncated" in line
    assert "types.parquet (column val_accuracy is string, expected double)" in line
    assert "and 1 more" in line  # three files named, the fourth counted
    assert line.endswith(f"run 'prunetune leaderboard check --dir {tmp_path}'")
    # Reading again, as a search does, warns no more, but a new bad file is news.
    assert board.runs() == ["r1", "r2"] and _keys(board.rows(run_id="r2")) == GOOD[2:]
    assert len(warnings) == 1
    (tmp_path / "y.parquet").write_bytes(b"PAR1")
    assert _keys(board.rows()) == GOOD
    assert len(warnings) == 2 and warnings[1].startswith("prunetune: warning: skipped 5 ")


def test_check_lists_exactly_the_bad_files(tmp_path: Path) -> None:
    board = _good_and_bad(tmp_path)
    assert board.check() == sorted((tmp_path / name, reason) for name, reason in BAD.items())
    assert Leaderboard(tmp_path / "nowhere").check() == []
    for name in BAD:
        (tmp_path / name).unlink()
    assert board.check() == []


def test_compatible_foreign_files_read_and_values_that_do_not_fit_are_skipped(tmp_path: Path) -> None:
    warnings: list[str] = []
    board = Leaderboard(tmp_path, warn=warnings.append)
    base = {"trial_id": ["t0"], "kind": ["trial"], "status": ["ok"]}
    # Another writer's types that cast safely: dictionary text, a naive (UTC) time, integers.
    pq.write_table(pa.table({**base, "run_id": pa.array(["cast"]).dictionary_encode(),
                             "time": [dt.datetime(2026, 1, 1)], "val_accuracy": [81],
                             "epochs": pa.array([3], pa.int64())}), tmp_path / "cast.parquet")
    pq.write_table(pa.table({**base, "run_id": ["big"], "time": [T0], "epochs": pa.array([2**40], pa.int64())}),
                   tmp_path / "big.parquet")
    pq.write_table(pa.table({**base, "run_id": pa.array([None], pa.string()), "time": [T0]}),
                   tmp_path / "null.parquet")
    pq.write_table(pa.table({**base, "run_id": ["float"], "time": [T0], "macs": [1.5]}), tmp_path / "float.parquet")
    [got] = board.rows()
    assert (got["run_id"], got["time"], got["val_accuracy"], got["epochs"]) == ("cast", T0, 81.0, 3)
    assert board.check() == [
        (tmp_path / "big.parquet", "column epochs does not fit int32"),
        (tmp_path / "float.parquet", "column macs is double, expected int64"),
        (tmp_path / "null.parquet", "column run_id has nulls"),
    ]
    assert len(warnings) == 1


def test_a_file_whose_data_pages_are_corrupt_is_skipped(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path, warn=lambda line: None)
    board.write([row("t0")], key="good")
    path = board.write([row("t1", error="x" * 5000)], key="corrupt")
    data = bytearray(path.read_bytes())
    for i in range(8, 600):  # the pages; the footer at the end stays intact
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    assert pq.read_schema(path).names == SCHEMA.names
    assert [r["trial_id"] for r in board.rows()] == ["t0"]
    assert board.check() == [(path, "corrupt data pages")]


def test_rereading_sees_writes_replacements_and_removals(tmp_path: Path) -> None:
    board = _good_and_bad(tmp_path)
    for name in BAD:
        (tmp_path / name).unlink()
    assert _keys(board.rows()) == GOOD
    board.write([row("t0", "r2", 2, val_accuracy=90.0)], key="r2")  # replaced
    board.write([row("t2", "r1", 3, val_accuracy=70.0)], key="r1-t2")  # a write after reading
    assert _keys(board.rows()) == [*GOOD[:2], ("r2", "t0", 90.0), ("r1", "t2", 70.0)]
    board.path_for("r1").unlink()
    assert _keys(board.rows()) == [("r2", "t0", 90.0), ("r1", "t2", 70.0)]


def test_a_board_pickles_without_what_it_read(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path)
    board.write([row()], key="k")
    board.rows()
    copy = pickle.loads(pickle.dumps(board))
    assert len(pickle.dumps(board)) < 1000  # the folder, not the rows read
    board.write([row("t1", seconds=1)], key="k1")
    assert [r["trial_id"] for r in copy.rows()] == ["t0", "t1"] and copy.folder == board.folder


def test_writing_beside_bad_files_still_works(tmp_path: Path) -> None:
    _good_and_bad(tmp_path)
    warnings: list[str] = []
    board = Leaderboard(tmp_path, warn=warnings.append)
    board.write([row("t5", "r3", 9, val_accuracy=88.0)], key="r3-t5")
    assert _keys(board.rows()) == [*GOOD, ("r3", "t5", 88.0)]
    assert _keys(Leaderboard(tmp_path, warn=warnings.append).rows(run_id="r3")) == [("r3", "t5", 88.0)]
    assert len(warnings) == 2  # one per board


def test_a_long_list_of_bad_files_is_cut_short(tmp_path: Path) -> None:
    for i in range(7):
        (tmp_path / f"junk{i}.parquet").write_bytes(b"junk")
    warnings: list[str] = []
    assert Leaderboard(tmp_path, warn=warnings.append).rows() == []
    [line] = warnings
    assert "junk0.parquet (not Parquet), junk1.parquet (not Parquet), junk2.parquet (not Parquet), and 4 more" in line


def test_the_default_warning_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _good_and_bad(tmp_path)
    board = Leaderboard(tmp_path)
    board.rows()
    board.rows()
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("prunetune: warning: skipped 4 ")


# ----------------------------------------------------------------------------- the command on bad files


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["leaderboard", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args", [("show",), ("show", "r2"), ("pareto",), ("compare", "r1", "r2")])
def test_the_command_reads_around_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    _good_and_bad(tmp_path)
    code, out, err = _cli(capsys, *args, "--dir", str(tmp_path))
    assert code == 0
    [line] = err.splitlines()
    assert line.startswith("prunetune: warning: skipped 4 unreadable leaderboard file(s)")
    assert "Traceback" not in err
    if args[0] == "compare":
        assert "r1" in out.splitlines()[0] and "r2" in out.splitlines()[0] and "85.00 (t1)" in out
    else:
        shown = [tuple(r.split()[:2]) for r in out.splitlines()[2:]]
        want = {("show",): [("r1", "t0"), ("r1", "t1"), ("r2", "t0")], ("show", "r2"): [("r2", "t0")],
                ("pareto",): [("r1", "t0"), ("r2", "t0"), ("r1", "t1")]}
        assert shown == want[args]


def test_leaderboard_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _good_and_bad(tmp_path)
    code, out, err = _cli(capsys, "check", "--dir", str(tmp_path))
    assert code == 1 and err == ""
    assert out.splitlines() == [f"{tmp_path / name}: {reason}" for name, reason in sorted(BAD.items())] + [
        "2 good file(s), 4 bad file(s)"
    ]
    for name in BAD:
        (tmp_path / name).unlink()
    assert _cli(capsys, "check", "--dir", str(tmp_path)) == (0, "2 good file(s), 0 bad file(s)\n", "")


@pytest.mark.parametrize("args", [("show",), ("pareto",), ("compare", "a", "b"), ("check",)])
def test_a_missing_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    missing = str(tmp_path / "missing")
    code, out, err = _cli(capsys, *args, "--dir", missing)
    assert (code, out) == (2, "")
    assert err == f"prunetune: error: leaderboard folder {missing!r} does not exist\n"
    assert not Path(missing).exists()


def test_an_empty_folder_shows_an_empty_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "show", "--dir", str(tmp_path))
    assert (code, err) == (0, "")
    assert out.splitlines()[0].split() == list(TABLE_COLUMNS) and len(out.splitlines()) == 2  # no rows
    assert _cli(capsys, "check", "--dir", str(tmp_path)) == (0, "0 good file(s), 0 bad file(s)\n", "")


def test_importing_the_leaderboard_stays_cheap() -> None:
    code = (
        "import sys, prunetune.results.leaderboard, prunetune.results.plot;"
        "print(','.join(m for m in ('torch', 'ray', 'optuna', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
