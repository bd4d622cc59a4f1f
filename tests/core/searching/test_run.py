"""Searches on a real two-node Ray cluster, on tiny settings."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prunetune.components.spaces import Candidate
from prunetune.host.manager import Host
from prunetune.jobs.evaluate import evaluate_checkpoint
from prunetune.results.checkpoint import load_student
from prunetune.results.leaderboard import Leaderboard
from prunetune.searching.prepare import SENSITIVITY_POWERS, prepare_search
from prunetune.searching.run import run_search
from prunetune.searching.spec import SearchSpec
from prunetune.structure.plan import StudentPlan
from prunetune.student.budget import MacsCounter, repair, student_macs

TINY = dict(
    dataset_options={"limit": 300}, model_options={"width": 4}, teacher_epochs=1, epochs=1,
    final_epochs=1, progress=False,
)


def _spec(tmp_path: Path, **changes: object) -> SearchSpec:
    base = SearchSpec(run_root=str(tmp_path / "runs"), leaderboard=str(tmp_path / "board"), **TINY)  # type: ignore[arg-type]
    return dataclasses.replace(base, **changes)


def test_the_searcher_starts_from_the_uniform_then_the_sensitivity_plans(tmp_path: Path) -> None:
    run = prepare_search(_spec(tmp_path, max_macs=0.3), echo=lambda _: None)
    assert len(run.seeded) == len(SENSITIVITY_POWERS)
    assert run.first_points == [run.baseline, *run.seeded]
    plans = [Candidate.from_params(point).plan for point in run.seeded]
    example, budget = run.data.train_x[:1], run.inputs.budget_macs
    counter = MacsCounter(run.teacher, example)
    assert run.spec.latency_cap == "uniform" and run.inputs.budget_latency_ms is not None
    for plan in plans:
        assert len(set(plan.ratios.values())) > 1  # not the uniform plan again
        # The plan on the space's grid meets the budget itself: the trial's repair leaves it be.
        assert student_macs(run.teacher, plan, example) <= budget
        assert not repair(run.teacher, plan, budget, example, run.spec.max_ratio).repaired
        # And the latency cap (the uniform student's, by default) by the trials' table.
        assert run.inputs.latency_table.bind(counter).predict(plan) <= run.inputs.budget_latency_ms
    # A higher power spreads the ratios further apart. Without a latency cap: the cap comes from
    # a table timed on this machine, and its plans clip at max_ratio where the timings say.
    free = prepare_search(_spec(tmp_path, max_macs=0.3, max_latency="none", name="no-cap"), echo=lambda _: None)
    by_power = dict(zip(SENSITIVITY_POWERS, (Candidate.from_params(point).plan for point in free.seeded)))
    spread = {p: max(plan.ratios.values()) - min(plan.ratios.values()) for p, plan in by_power.items()}
    assert spread[0.25] < spread[0.5] < spread[1.0]
    # The baseline, repaired as its trial repairs it, is the uniform plan exactly at the budget.
    fix = repair(run.teacher, Candidate.from_params(run.baseline or {}).plan, budget, example, run.spec.max_ratio)
    uniform = repair(run.teacher, StudentPlan(), budget, example, run.spec.max_ratio)
    assert fix.feasible and len(set(fix.plan.ratios.values())) == 1
    assert fix.plan.ratios == pytest.approx(dict(uniform.plan.ratios), abs=2e-3)
    unbudgeted = prepare_search(_spec(tmp_path, name="no-budget"), echo=lambda _: None)
    assert unbudgeted.seeded == () and unbudgeted.first_points == [unbudgeted.baseline]


def meta_teacher_test(run_dir: Path) -> float:
    """The teacher's test accuracy the best student's file records."""
    _, meta = load_student(Host.create().registry, run_dir / "best_student.pt")
    return meta["teacher_metrics"]["accuracy"]


def test_a_search_runs_on_both_nodes_and_keeps_the_best_student(tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    # Two workers start at once: without a concurrency limit Tune starts one at a time, and as
    # it reuses workers, trials this short would all run on the first one before a second starts.
    spec = _spec(tmp_path, name="two-nodes", num_samples=4, max_concurrent=2, max_macs=0.3, address=ray_cluster.address)
    summary = run_search(spec, echo=lambda _: None)
    rows = Leaderboard(spec.leaderboard).rows(run_id="two-nodes")
    trials = [r for r in rows if r["kind"] == "trial"]
    finals = [r for r in rows if r["kind"] == "final"]
    assert len(trials) == 4 and len(finals) == 1
    assert len({r["node"] for r in trials}) == 2  # the cluster's two nodes both ran trials
    assert all(r["status"] == "ok" and r["macs_fraction"] <= 0.3 + 1e-9 for r in trials)
    assert {r["hardware"] for r in trials} == {"cpu x1"}  # each trial trained on its one CPU
    # Rows are written as trials end, and two run at once, so the row times do not give the order
    # the searcher suggested them in; Tune's trial folders do: run_trial_<id>_<number>_<params>.
    run_dir = Path(summary["run_dir"])
    number = {d.name.split("_")[2]: int(d.name.split("_")[3]) for d in (run_dir / "tune").glob("run_trial_*")}
    first = json.loads(min(trials, key=lambda r: number[r["trial_id"]])["params_json"])
    assert len({round(v, 6) for k, v in first.items() if k.startswith("ratio:")}) == 1  # uniform baseline first
    best = max(trials, key=lambda r: r["val_accuracy"])
    assert finals[0]["trial_id"] == f"final-{best['trial_id']}"
    assert finals[0]["test_accuracy"] is not None and finals[0]["macs_fraction"] <= 0.3 + 1e-9
    assert finals[0]["hardware"] == "cpu x1"
    # teacher_accuracy is the validation one in every row; the final row adds the test one.
    assert len({r["teacher_accuracy"] for r in rows}) == 1 and {r["teacher_test_accuracy"] for r in trials} == {None}
    assert finals[0]["teacher_test_accuracy"] == meta_teacher_test(run_dir)
    assert all(r["train_seconds"] > 0 and r["prune_seconds"] > 0 and r["overhead_seconds"] >= 0 for r in trials)
    assert all(r["wall_seconds"] == pytest.approx(r["train_seconds"] + r["prune_seconds"] + r["overhead_seconds"])
               for r in trials)
    # Tune reused the workers: four trials ran in fewer than four processes.
    pids = {json.loads(f.read_text().splitlines()[-1])["pid"] for f in (run_dir / "tune").glob("*/result.json")}
    assert 1 <= len(pids) < 4
    assert (run_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "summary.txt").is_file()
    saved, now = evaluate_checkpoint(str(run_dir / "best_student.pt"), device="cpu")
    assert saved["accuracy"] == now["accuracy"] == finals[0]["test_accuracy"]
    assert now["macs"] == finals[0]["macs"]
    model, meta = load_student(Host.create().registry, run_dir / "best_student.pt")
    assert meta["source_trial"] == best["trial_id"]
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_a_pareto_search_with_asha_keeps_each_front_point(tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    spec = _spec(tmp_path, name="pareto", num_samples=4, epochs=2, scheduler="asha", objectives=("accuracy", "macs"),
                 space="ratio_only", strategy_options={"sampler": "nsga2"}, address=ray_cluster.address)
    summary = run_search(spec, echo=lambda _: None)
    rows = Leaderboard(spec.leaderboard).rows(run_id="pareto")
    trials = [r for r in rows if r["kind"] == "trial"]
    finals = [r for r in rows if r["kind"] == "final"]
    assert len(trials) == 4 and {r["status"] for r in trials} <= {"ok", "stopped"}
    # Through Tune, every row keeps the accuracy of each epoch it trained (stopped ones: fewer).
    histories = [json.loads(r["val_history"]) for r in trials]
    assert all(len(h) == r["epochs"] and h[-1] == r["val_accuracy"] for h, r in zip(histories, trials))
    assert 1 <= len(finals) == len(summary["students"])
    assert all(Path(p).is_file() for p in summary["students"])


def _trial_files(board: Path) -> list[Path]:
    return [p for p in board.glob("*.parquet") if "final" not in p.name] if board.is_dir() else []


def test_a_killed_search_resumes_with_every_trial_exactly_once(tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    board = tmp_path / "board"
    common = [sys.executable, "-m", "prunetune", "search", "--address", ray_cluster.address]
    start = common + [
        "--name", "killed", "--runs", str(tmp_path / "runs"), "--leaderboard", str(board),
        "--dataset-opt", "limit=300", "--model-opt", "width=4", "--teacher-epochs", "1",
        "--epochs", "2", "--final-epochs", "1", "--num-samples", "5", "--max-concurrent", "1", "--quiet",
    ]
    driver = subprocess.Popen(start, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 240
    while len(_trial_files(board)) < 2 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert driver.poll() is None, "the search ended before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done_before = len(_trial_files(board))
    assert 2 <= done_before < 5

    resumed = subprocess.run(common + ["--resume", str(tmp_path / "runs" / "killed")],
                             capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = Leaderboard(board).rows(run_id="killed")
    trial_ids = [r["trial_id"] for r in rows if r["kind"] == "trial"]
    assert len(trial_ids) == len(set(trial_ids)) == 5
    assert sum(r["kind"] == "final" for r in rows) == 1
    assert (tmp_path / "runs" / "killed" / "best_student.pt").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "everything"], r"unknown search space 'everything' \(valid: kernel_only, per_layer, ratio_only, uniform\)"),
        (["--strategy", "grid"], r"unknown strategy 'grid' \(valid: optuna, structure_diversity\)"),
        (["--strategy-opt", "sampler=cmaes"], r"sampler"),
        (["--objectives", "accuracy,beauty"], r"unknown objective beauty"),
        (["--objectives", "macs"], r"--objectives must start with accuracy"),
        (["--max-macs", "1.5"], r"--max-macs must be in \(0, 1\]"),
        (["--num-samples", "0"], r"--num-samples must be at least 1"),
        (["--gpus-per-trial", "-1"], r"--gpus-per-trial must be 0 or more"),
        # More than any machine here has: Tune would wait for ever for such a trial.
        (["--gpus-per-trial", "1024"], r"--gpus-per-trial 1024 asks for more than this machine"),
        (["--cpus-per-trial", "4096"], r"--cpus-per-trial 4096 is more than this machine's \d+ CPUs"),
        (["--resume", "/no/run"], r"'/no/run' is not a run folder"),
        (["--space-opt", "max_ratio=2"], r"search space 'per_layer'"),
    ],
)
def test_bad_search_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        args: list[str], message: str) -> None:
    from prunetune.cli import main

    code = main(["search", "--runs", str(tmp_path / "runs"), "--leaderboard", str(tmp_path / "board"), *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    import re

    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_diverging_trials_end_as_errors_and_no_student_is_kept(tmp_path: Path, ray_cluster,  # type: ignore[no-untyped-def]
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from prunetune.cli import main

    code = main(["search", "--runs", str(tmp_path / "runs"), "--leaderboard", str(tmp_path / "board"), "--name", "nan",
                 "--lr", "1e30", "--num-samples", "2", "--dataset-opt", "limit=300", "--model-opt", "width=4",
                 "--teacher-epochs", "1", "--epochs", "2", "--final-epochs", "1", "--address", ray_cluster.address])
    out, err = capsys.readouterr()
    assert code == 1 and err.strip().splitlines()[-1].startswith("prunetune: error: the search kept no student"), err
    trials = Leaderboard(tmp_path / "board").rows(run_id="nan")
    assert len(trials) == 2 and all(r["kind"] == "trial" and r["status"] == "error" for r in trials)
    # Stopped in the first epoch: nothing of the diverged epoch was reported.
    assert all(re.search(r"loss became (NaN|inf) at step \d+ \(epoch 1 of distill", r["error"]) and r["epochs"] == 0
               for r in trials), [r["error"] for r in trials]
    assert not (tmp_path / "runs" / "nan" / "best_student.pt").exists()
    assert "best_student.pt" not in out.splitlines()[-1]  # the last line names only files that exist


def test_a_search_into_a_leaderboard_with_bad_files_completes(tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    board = tmp_path / "board"
    board.mkdir()
    (board / "junk.parquet").write_bytes(b"not parquet at all")
    earlier = Leaderboard(board).write([{"run_id": "old", "trial_id": "t0", "kind": "trial", "status": "ok"}], key="old-t0")
    warnings: list[str] = []
    spec = _spec(tmp_path, name="beside-junk", num_samples=1, address=ray_cluster.address)
    summary = run_search(spec, echo=warnings.append)
    assert Path(summary["students"][0]).is_file()
    rows = Leaderboard(board, warn=warnings.append).rows()
    assert {r["run_id"] for r in rows} == {"old", "beside-junk"} and earlier.is_file()
    assert [p.name for p, _ in Leaderboard(board).check()] == ["junk.parquet"]
