"""The leaderboard reading around files it cannot read (skipped with one warning, listed by
``check``), and reading again."""

from __future__ import annotations

import datetime as dt
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prunetune.cli import main
from prunetune.results.leaderboard import Leaderboard
from prunetune.results.schema import SCHEMA, TABLE_COLUMNS
from tests.core.results.board_rows import T0, row

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
