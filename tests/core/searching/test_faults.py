"""Faults injected into real searches: a driver SIGKILLed at chosen points and resumed from
another directory, a worker node removed midway, components that raise or break the model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("ray")

from prunetune.host.manager import Host  # noqa: E402
from prunetune.results.checkpoint import load_student  # noqa: E402
from prunetune.results.leaderboard import Leaderboard  # noqa: E402
from prunetune.results.schema import SCHEMA  # noqa: E402
from prunetune.searching.prepare import prepare_search  # noqa: E402
from prunetune.searching.spec import SPEC_FILE, SearchSpec  # noqa: E402
from tests.distributions import install_distribution  # noqa: E402

# Every test here runs searches on Ray, most of them through subprocess drivers.
pytestmark = [pytest.mark.slow, pytest.mark.ray]

# test_search.py's tiny settings, as command-line arguments.
TINY = ["--dataset-opt", "limit=300", "--model-opt", "width=4", "--teacher-epochs", "1", "--epochs", "1",
        "--final-epochs", "1", "--quiet"]
RUN = "faulty"

# A search driver that SIGKILLs itself at one chosen point, then runs `prunetune` with the rest
# of its arguments. It writes what it saw to the record file just before it dies.
KILLING_DRIVER = '''
import json, os, signal, sys

from prunetune.components.cluster import loopback_ray

loopback_ray()
import prunetune.searching.final
import prunetune.results.leaderboard
import prunetune.searching.tuning
from prunetune.cli import main

point, record, args = sys.argv[1], sys.argv[2], sys.argv[3:]


def die(**facts):
    with open(record, "w") as f:
        json.dump({"point": point, **facts}, f)
    os.kill(os.getpid(), signal.SIGKILL)


if point == "trial":  # once a trial's row is written while another trial runs
    complete = prunetune.searching.tuning.LeaderboardWriter.on_trial_complete

    def on_trial_complete(self, iteration, trials, trial, **info):
        complete(self, iteration, trials, trial, **info)
        running = [t.trial_id for t in trials if t.status == "RUNNING" and t is not trial]
        if running:
            die(written=trial.trial_id, running=running)

    prunetune.searching.tuning.LeaderboardWriter.on_trial_complete = on_trial_complete
elif point == "write":  # the second row's file is written under its dot-name, not yet renamed
    write = prunetune.results.leaderboard.Leaderboard.write
    calls = []

    class KillingOs:
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            die(tmp=str(src), target=str(dst))

    def killing_write(self, rows, key):
        calls.append(key)
        if len(calls) == 2:
            prunetune.results.leaderboard.os = KillingOs()
        return write(self, rows, key)

    prunetune.results.leaderboard.Leaderboard.write = killing_write
elif point == "final":  # every trial done, the best one about to be distilled again
    prunetune.searching.final._train_remote = lambda run, candidate: die(trial_rows=len(
        prunetune.results.leaderboard.Leaderboard(run.spec.leaderboard).rows(kind="trial")))
else:
    raise SystemExit(f"unknown point {point}")
sys.exit(main(args))
'''


def _trial_rows(board: Path, run_id: str = RUN) -> list[dict[str, Any]]:
    return [r for r in Leaderboard(board).rows(run_id=run_id) if r["kind"] == "trial"]


def _assert_complete(board: Path, run_dir: Path, num_samples: int) -> list[dict[str, Any]]:
    """Every trial has exactly one row, every file reads, and the final student exists and loads."""
    assert Leaderboard(board).check() == []  # every *.parquet file in the folder reads
    rows = Leaderboard(board).rows(run_id=run_dir.name)
    trial_ids = [r["trial_id"] for r in rows if r["kind"] == "trial"]
    # Every trial Tune ran (its folders: run_trial_<id>_<number>_...) has exactly one row. A kill
    # can leave Tune's searcher snapshot a trial behind its experiment state, in which case the
    # restored search may start one trial more than asked: still one row each.
    ran = sorted(d.name.split("_")[2] for d in (run_dir / "tune").glob("run_trial_*"))
    assert sorted(trial_ids) == ran and len(set(trial_ids)) == len(trial_ids)  # none duplicated, none lost
    assert num_samples <= len(trial_ids) <= num_samples + 1
    finals = [r for r in rows if r["kind"] == "final"]
    assert [r["status"] for r in finals] == ["ok"]
    assert finals[0]["trial_id"].removeprefix("final-") in trial_ids
    model, meta = load_student(Host.create().registry, run_dir / "best_student.pt")
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    assert f"final-{meta['source_trial']}" == finals[0]["trial_id"]
    spec = SearchSpec.from_json((run_dir / SPEC_FILE).read_text())
    assert Path(spec.run_root).is_absolute() and Path(spec.leaderboard).resolve() == board.resolve()
    assert (run_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "summary.txt").read_text().startswith(f"run {run_dir.name}: {len(trial_ids)} trials")
    return rows


@pytest.mark.parametrize("point", ["trial", "write", "final"])
def test_a_driver_killed_at_each_point_resumes_from_another_directory(tmp_path: Path, ray_cluster, point: str) -> None:  # type: ignore[no-untyped-def]
    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir()
    other.mkdir()
    driver, record = tmp_path / "driver.py", tmp_path / "fault.json"
    driver.write_text(KILLING_DRIVER)
    num_samples = 4
    args = ["search", "--address", ray_cluster.address, "--name", RUN, "--runs", "runs", "--leaderboard", "board",
            "--num-samples", str(num_samples), "--max-concurrent", "2", *TINY]
    with open(tmp_path / "killed.err", "w") as err:  # a file, not a pipe: nothing can hold it open
        killed = subprocess.run([sys.executable, str(driver), point, str(record), *args], cwd=first,
                                stdout=subprocess.DEVNULL, stderr=err, timeout=240)
    assert killed.returncode == -signal.SIGKILL, (tmp_path / "killed.err").read_text()[-3000:]
    fault = json.loads(record.read_text())
    board, run_dir = first / "board", first / "runs" / RUN
    # The kill came where it was meant to.
    written = [r["trial_id"] for r in _trial_rows(board)]
    if point == "trial":
        assert written == [fault["written"]] and fault["running"]
    elif point == "write":
        assert len(written) == 1 and Path(fault["tmp"]).is_file() and not Path(fault["target"]).exists()
        assert Path(fault["tmp"]).name.startswith(".")
    else:
        assert len(written) == fault["trial_rows"] == num_samples
    assert not (run_dir / "best_student.pt").exists()

    # A relative RUN_DIR from elsewhere: the run's own paths are absolute in search.json.
    resumed = subprocess.run([sys.executable, "-m", "prunetune", "search", "--resume", "../first/runs/" + RUN,
                              "--address", ray_cluster.address], cwd=other, capture_output=True, text=True,
                             timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _assert_complete(board, run_dir, num_samples)
    assert list(other.iterdir()) == []  # nothing written where the resume ran
    trials = [r for r in rows if r["kind"] == "trial"]
    assert all(r["status"] == "ok" and r["attempts"] == 1 for r in trials)  # a dead driver is no trial's failure
    if point == "write":  # the row whose write was cut short is there now; its dot-file is never read
        assert Path(fault["target"]).is_file() and Path(fault["tmp"]).is_file()


@pytest.mark.parametrize("listed", [0, 1])
def test_a_trial_list_saved_behind_the_searcher_still_runs_every_trial(tmp_path: Path, ray_cluster, listed: int) -> None:  # type: ignore[no-untyped-def]
    # Tune copies its trial list and its searcher's state to the run folder in the background,
    # file by file: a driver killed mid-copy can leave a list older than the searcher, down to
    # the list saved before any trial began.
    import ray.cloudpickle as cloudpickle

    driver, record = tmp_path / "driver.py", tmp_path / "fault.json"
    driver.write_text(KILLING_DRIVER)
    num_samples = 4
    args = ["search", "--address", ray_cluster.address, "--name", RUN, "--runs", "runs", "--leaderboard", "board",
            "--num-samples", str(num_samples), "--max-concurrent", "2", *TINY]
    with open(tmp_path / "killed.err", "w") as err:
        killed = subprocess.run([sys.executable, str(driver), "trial", str(record), *args], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=err, timeout=240)
    assert killed.returncode == -signal.SIGKILL, (tmp_path / "killed.err").read_text()[-3000:]
    board, tune_dir = tmp_path / "board", tmp_path / "runs" / RUN / "tune"
    state_file = max(tune_dir.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    started = [d.name.split("_")[2] for d in tune_dir.glob("run_trial_*")]
    assert len(state["trial_data"]) >= 1 and len(started) >= 2
    state_file.write_text(json.dumps({**state, "trial_data": state["trial_data"][:listed]}))
    search_file = max(tune_dir.glob("search_gen_state-*.json"))
    search = cloudpickle.loads(search_file.read_bytes())
    search["counter"] = len(started)  # the searcher counts every trial that began
    search["name:ConcurrencyLimiter"]["live_trials"] = set(started)
    search_file.write_bytes(cloudpickle.dumps(search))

    resumed = subprocess.run([sys.executable, "-m", "prunetune", "search", "--resume", str(tmp_path / "runs" / RUN),
                              "--address", ray_cluster.address], cwd=tmp_path, capture_output=True, text=True,
                             timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Failed to restore" not in resumed.stderr
    _assert_complete(board, tmp_path / "runs" / RUN, num_samples)


NODE_LOSS_DRIVER = '''
import json, sys

from prunetune.components.cluster import loopback_ray
from prunetune.searching.run import run_search
from prunetune.searching.spec import SearchSpec

loopback_ray()
import ray
from ray.cluster_utils import Cluster

import prunetune.searching.tuning

out = sys.argv[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
removed = []


def on_trial_result(self, iteration, trials, trial, result, **info):
    # The first epoch's report from the worker node: the trial trains its second epoch there.
    if result.get("node") == worker.node_id and not removed:
        cluster.remove_node(worker)
        removed.append(trial.trial_id)


prunetune.searching.tuning.LeaderboardWriter.on_trial_result = on_trial_result
spec = SearchSpec(run_root=out + "/runs", leaderboard=out + "/board", name="lost-node", num_samples=3,
                  max_concurrent=2, address=cluster.address, dataset_options={"limit": "300"},
                  model_options={"width": "4"}, teacher_epochs=1, epochs=2, final_epochs=1, progress=False)
summary = run_search(spec, echo=lambda _: None)
with open(out + "/node-loss.json", "w") as f:
    json.dump({"removed": worker.node_id, "head": cluster.head_node.node_id, "trials": removed}, f)
ray.shutdown()
cluster.shutdown()
'''


def test_a_lost_worker_node_retries_its_trial_and_the_search_completes(tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(NODE_LOSS_DRIVER)
    # Its own cluster, in its own process: Ray is process-wide, and the session's cluster stays whole.
    done = subprocess.run([sys.executable, str(driver), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads((tmp_path / "node-loss.json").read_text())
    rows = _assert_complete(tmp_path / "board", tmp_path / "runs" / "lost-node", 3)
    trials = {r["trial_id"]: r for r in rows if r["kind"] == "trial"}
    [lost] = facts["trials"]  # the trial that was training on the node when it went
    assert all(r["status"] == "ok" and r["epochs"] == 2 for r in trials.values())
    assert {t: r["attempts"] for t, r in trials.items()} == {t: 2 if t == lost else 1 for t in trials}
    assert {r["node"] for r in trials.values()} == {facts["head"]}  # it finished on the node that was left


PLUGIN_MODULE = '''
"""A third-party package's faulty components."""
import dataclasses

from torch import nn

from prunetune import hookimpl
from prunetune.plugins.pruners.channel import ChannelPruner
from prunetune.plugins.scorers.l1 import L1Scorer


class PickyScorer(L1Scorer):
    """l1, but it raises on a model with a 5x5 conv."""

    def score(self, group, ctx):
        for name, module in ctx.model.named_modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (5, 5):
                raise RuntimeError(f"picky cannot score a model with a 5x5 conv ({name})")
        return super().score(group, ctx)


class ShapeBreaker(ChannelPruner):
    """channel, but a plan whose ratios spread by more than max_spread loses 3 classes."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        max_spread: float = 1.0

    def prune(self, job):
        record = super().prune(job)
        ratios = list(job.plan.ratios.values())
        if ratios and max(ratios) - min(ratios) > self.config.max_spread:
            old = job.model.classifier
            job.model.classifier = nn.Linear(old.in_features, old.out_features - 3)
        return record


@hookimpl
def prunetune_add_components(registry):
    registry.add_scorer("picky", PickyScorer)
    registry.add_pruner("shape_breaker", ShapeBreaker)
'''


SCORER_ERROR = r"RuntimeError: picky cannot score a model with a 5x5 conv \([\w.]+\)"
SHAPE_ERROR = "ValueError: pruner 'shape_breaker' changed the model's output shape from (10,) to (7,)"


def _spread(params: dict[str, Any]) -> float:
    ratios = [v for k, v in params.items() if k.startswith("ratio:")]
    return max(ratios) - min(ratios)


def test_a_raising_scorer_and_a_shape_breaking_pruner_fail_only_their_trials(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The searcher starts from the uniform plan and the sensitivity plans; the pruner breaks the
    # one (or those) whose ratios spread most. The next plan is the sampler's, with kernel size 3
    # or 5 for each of seven convs: a 5 among them (all but surely) makes the scorer raise.
    # The plans depend on the teacher: options as the command line gives them (text) find the
    # one the search will use in the cache. Three teacher epochs, a key no other test uses: at
    # batch 128 one epoch is 3 steps, and so near-random a teacher that every group's sensitivity
    # can sit at the floor, making every sensitivity plan the uniform one.
    # No latency cap: a trial would repair the sensitivity plans to it, changing their spread.
    spec = SearchSpec(run_root=str(tmp_path / "runs"), leaderboard=str(tmp_path / "board"), max_macs=0.3,
                      max_latency="none", dataset_options={"limit": "300"}, model_options={"width": "4"},
                      teacher_epochs=3, progress=False)
    points = prepare_search(spec, run_id="plans", echo=lambda _: None).first_points
    spreads = [round(_spread(p), 6) for p in points]
    top = max(spreads)
    max_spread = (top + max(s for s in spreads if s < top)) / 2  # below it at least the uniform plan's 0
    site = tmp_path / "site"
    install_distribution(site, "faulty-components", "0.3", "faulty_components", PLUGIN_MODULE, "faulty")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           # One thread, as this process: the driver's sensitivity plans then equal the ones above.
           "OMP_NUM_THREADS": "1"}
    num_samples = len(points) + 1
    args = ["search", "--name", RUN, "--runs", str(tmp_path / "runs"), "--leaderboard", str(tmp_path / "board"),
            "--max-macs", "0.3", "--max-latency", "none", "--space-opt", "kernel_sizes=3,5", "--scorer", "picky", "--pruner", "shape_breaker",
            "--pruner-opt", f"max_spread={max_spread}", "--num-samples", str(num_samples), "--cpus-per-trial", "1",
            *TINY, "--teacher-epochs", "3"]
    # An embedded Ray started by the driver: its workers inherit PYTHONPATH, so they find the plugin.
    done = subprocess.run([sys.executable, "-m", "prunetune", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.syspath_prepend(str(site))  # the best student names the plugin's pruner: loading it takes the plugin
    rows = _assert_complete(tmp_path / "board", tmp_path / "runs" / RUN, num_samples)
    outcomes = []
    for row in (r for r in rows if r["kind"] == "trial"):
        params = json.loads(row["params_json"])  # an errored trial's row keeps its parameters too
        assert row["pruner"] == "shape_breaker" and row["scorer"] == "picky"
        if 5 in [v for k, v in params.items() if k.startswith("kernel:")]:
            outcomes.append("scorer")
            assert re.fullmatch(SCORER_ERROR, row["error"] or ""), row["error"]
        elif _spread(params) > max_spread:
            outcomes.append("pruner")
            assert row["error"] == SHAPE_ERROR, row["error"]
        else:
            outcomes.append("ok")
            assert row["error"] is None and row["attempts"] == 1
        assert row["status"] == ("ok" if outcomes[-1] == "ok" else "error")
        if outcomes[-1] != "ok":
            # Its own error is its result: not retried, no accuracy recorded.
            assert row["attempts"] == 1 and row["val_accuracy"] is None
    # Only the sampler's plan has a 5x5 conv; the widest-spread plans break; the others train.
    assert outcomes.count("scorer") == 1 and outcomes.count("pruner") >= 1 and outcomes.count("ok") >= 1, (
        outcomes, spreads, max_spread, [json.loads(r["params_json"]) for r in rows if r["kind"] == "trial"])
    assert json.loads(rows[-1]["plugin_versions"])["pruner.shape_breaker"] == "faulty-components 0.3"


def test_files_written_before_the_attempts_column_still_read(tmp_path: Path) -> None:
    board = Leaderboard(tmp_path)
    old = pa.schema([f for f in SCHEMA if f.name != "attempts"])
    row = {"run_id": "old", "trial_id": "t1", "kind": "trial", "status": "ok",
           "time": pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py()}
    pq.write_table(pa.Table.from_pylist([row], schema=old), tmp_path / "old-t1.parquet")
    board.write([{**row, "trial_id": "t2", "attempts": 2}], key="new-t2")
    assert board.check() == []
    assert {r["trial_id"]: r["attempts"] for r in board.rows()} == {"t1": None, "t2": 2}
