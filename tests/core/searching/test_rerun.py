"""Reproducible searches and ``prunetune rerun``, on the session's Ray cluster and tiny settings."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from prunetune.cli import main
from prunetune.results.leaderboard import Leaderboard
from prunetune.searching.run import run_search
from prunetune.searching.spec import SPEC_FILE, SearchSpec

TINY = dict(
    dataset_options={"limit": 300}, model_options={"width": 4}, teacher_epochs=1, epochs=1,
    final_epochs=1, progress=False,
)
RUN = "seed0"


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, ray_cluster) -> SearchSpec:  # type: ignore[no-untyped-def]
    """One three-trial search that the tests share (no budget: trials 2 and 3 are TPE's)."""
    root = tmp_path_factory.mktemp("rerun")
    # One trial at a time: with several at once, what TPE suggests next depends on which trials
    # have ended by then, i.e. on timing, and so does Tune's trial numbering.
    spec = SearchSpec(run_root=str(root / "runs"), leaderboard=str(root / "board"), name=RUN, num_samples=3,
                      max_concurrent=1, address=ray_cluster.address, **TINY)  # type: ignore[arg-type]
    run_search(spec, echo=lambda _: None)
    return spec


def _trials(spec: SearchSpec) -> list[dict[str, Any]]:
    """The run's trial rows in the order Tune numbered them (run_trial_<id>_<number>_<params>)."""
    rows = Leaderboard(spec.leaderboard).rows(run_id=spec.name, kind="trial")
    folders = (Path(spec.run_root) / str(spec.name) / "tune").glob("run_trial_*")
    number = {d.name.split("_")[2]: int(d.name.split("_")[3]) for d in folders}
    return sorted(rows, key=lambda r: number[r["trial_id"]])


def _files(root: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_the_same_seed_gives_the_same_trials_and_another_seed_does_not(searched: SearchSpec) -> None:
    again = dataclasses.replace(searched, name="seed0-again")
    other = dataclasses.replace(searched, name="seed1", seed=1)
    for spec in (again, other):
        run_search(spec, echo=lambda _: None)
    first, second, third = (_trials(spec) for spec in (searched, again, other))
    assert len(first) == len(second) == len(third) == 3
    assert all(r["status"] == "ok" for r in first + second + third)
    assert len({r["plan"] for r in first}) > 1  # TPE's suggestions, not the baseline again

    def trials(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(r["plan"], r["params_json"], r["val_accuracy"], r["val_loss"]) for r in rows]

    assert trials(second) == trials(first)
    assert trials(third) != trials(first)


def test_rerun_reproduces_a_trial_exactly_and_writes_nothing(searched: SearchSpec,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    row = _trials(searched)[-1]  # one of TPE's, with its own plan
    root = Path(searched.run_root).parent
    before = _files(root)
    # No --leaderboard: the run's search.json names it.
    code = main(["rerun", RUN, row["trial_id"], "--runs", searched.run_root])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[-1] == "reproduced", out
    head = f"trial {row['trial_id']} of run {RUN} (ok, 1 epoch, seed 0): trained on cpu x1, rerun on cpu x1"
    assert lines[0].startswith(head), out
    accuracy = next(line for line in lines if line.startswith("validation accuracy"))
    assert accuracy.split()[-2:] == [f"{row['val_accuracy']:.2f}"] * 2
    loss = next(line for line in lines if line.startswith("validation loss"))
    assert loss.split()[-2:] == [f"{row['val_loss']:.4f}"] * 2
    assert _files(root) == before


def _changed_board(spec: SearchSpec, tmp_path: Path, **changes: Any) -> tuple[str, dict[str, Any]]:
    """A copy of the run's leaderboard whose first trial's row has ``changes``."""
    board = tmp_path / "board"
    shutil.copytree(spec.leaderboard, board)
    row = {**_trials(spec)[0], **changes}
    Leaderboard(board).write([row], key=f"{RUN}-{row['trial_id']}")  # LeaderboardWriter's key: replaces the row
    rows = [r for r in Leaderboard(board).rows(run_id=RUN) if r["trial_id"] == row["trial_id"]]
    assert len(rows) == 1 and rows[0]["status"] == row["status"]
    return str(board), row


def test_rerun_of_a_row_with_another_accuracy_differs(searched: SearchSpec, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    row = _trials(searched)[0]
    board, changed = _changed_board(searched, tmp_path, val_accuracy=row["val_accuracy"] + 5.0)
    code = main(["rerun", RUN, changed["trial_id"], "--runs", searched.run_root, "--leaderboard", board])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.strip().splitlines()[-1] == "differs by -5.00 pts"


def test_a_gpu_trial_needs_a_gpu_or_a_tolerance(searched: SearchSpec, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    row = _trials(searched)[0]
    board, changed = _changed_board(searched, tmp_path, hardware="NVIDIA H200", val_accuracy=row["val_accuracy"] + 0.5)
    args = ["rerun", RUN, changed["trial_id"], "--runs", searched.run_root, "--leaderboard", board]
    if not torch.cuda.is_available():
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "this machine has no CUDA GPU" in err and "--tolerance" in err and len(err.strip().splitlines()) == 1
    code = main([*args, "--tolerance", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "trained on NVIDIA H200" in out and "not bit-exact" in out
    assert out.strip().splitlines()[-1] == "reproduced (within 1 pts)"


def _bad(case: str, spec: SearchSpec, tmp_path: Path) -> tuple[list[str], str]:
    """The arguments of a bad rerun, and what its one line says."""
    runs = ["--runs", spec.run_root]
    if case == "unknown run":
        return ["rerun", "nope", "x", *runs], rf"no run 'nope' in runs folder '.*' \(runs: .*{RUN}"
    if case == "unknown trial":
        ids = ", ".join(sorted(r["trial_id"] for r in _trials(spec))[:1])
        return ["rerun", RUN, "nope", *runs], rf"run '{RUN}' has no trial 'nope' \(trials: .*{ids}"
    if case == "no search.json":
        (tmp_path / "runs" / "empty").mkdir(parents=True)
        args = ["rerun", "empty", "x", "--runs", str(tmp_path / "runs")]
        return args, r"is not a run folder \(it has no search.json\)"
    if case == "factory model":
        run = tmp_path / "runs" / RUN
        run.mkdir(parents=True)
        data = json.loads((Path(spec.run_root) / RUN / SPEC_FILE).read_text())
        (run / SPEC_FILE).write_text(json.dumps({**data, "model": "mypkg.nets:make"}))
        return ["rerun", RUN, "x", "--runs", str(tmp_path / "runs")], r"pass --model mypkg.nets:make if you trust it"
    status = case.split()[0]
    board, row = _changed_board(spec, tmp_path, status=status)
    return (["rerun", RUN, row["trial_id"], *runs, "--leaderboard", board],
            rf"trial '{row['trial_id']}' of run '{RUN}' is {status} .*only ok and stopped trials can be rerun")


@pytest.mark.parametrize("case", ["unknown run", "unknown trial", "no search.json", "factory model",
                                  "error row", "infeasible row"])
def test_bad_rerun_input_is_one_line(searched: SearchSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     case: str) -> None:
    import re

    args, message = _bad(case, searched, tmp_path)
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    assert re.search(message, captured.err), captured.err
