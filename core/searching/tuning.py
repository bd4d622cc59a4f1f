"""Ray Tune for a prepared search: Ray start-up, the Tuner, resume, leaderboard rows per trial.

Imported only when a search runs, so Ray loads only then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from prunetune.components.cluster import ensure_ray
from prunetune.components.spaces import DefineByRun
from prunetune.host.manager import Host
from prunetune.results.leaderboard import Leaderboard
from prunetune.searching.prepare import SearchRun
from prunetune.searching.spec import OBJECTIVES, SearchSpec
from prunetune.searching.trial import run_trial

__all__ = [
    "MAX_FAILURES", "LeaderboardWriter", "RowContext", "concurrency", "experiment_path", "fit_trials",
    "reconcile_saved_state", "trial_row", "trial_status",
]

#: Tune's output settings for a search: the older reporter (silent at verbosity 0), and no warning
#: that its state is saved often (every epoch's checkpoint asks for it, on purpose).
_TUNE_OUTPUT = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}

#: How many times Tune restarts a failed trial (from scratch: trials resume no checkpoint).
#: Only a lost worker or node fails a trial: a trial's own errors (a plugin's exception, a
#: diverged loss) are its reported result (see :func:`prunetune.searching.trial.run_trial`), since the
#: same plan would fail the same way again.
MAX_FAILURES = 2


def concurrency(spec: SearchSpec, resources: Mapping[str, float]) -> int:
    """``--max-concurrent``, or as many trials as the cluster's CPUs (and GPUs) hold at once.

    Tune lets a searcher other than random search keep only as many trials pending as its
    concurrency limit, one without a limit; with reused workers, short trials would then keep
    running on the first worker while the next one starts. A limit equal to the slots starts
    them all together.
    """
    if spec.max_concurrent is not None:
        return spec.max_concurrent
    slots = resources.get("CPU", 1.0) / spec.cpus_per_trial
    if spec.gpus_per_trial > 0:
        slots = min(slots, resources.get("GPU", 0.0) / spec.gpus_per_trial)
    return max(1, int(slots + 1e-9))


def trial_status(metrics: Mapping[str, Any], epochs: int, error: str | None) -> str:
    """``ok``, ``stopped`` (early, by the scheduler), ``infeasible`` (over budget) or ``error``."""
    if error or metrics.get("error"):
        return "error"
    if metrics.get("feasible") is False:
        return "infeasible"
    if int(metrics.get("epoch") or 0) < epochs:
        return "stopped"
    return "ok"


@dataclasses.dataclass(frozen=True)
class RowContext:
    """What every leaderboard row of a run shares (small: it is pickled with the Tune experiment)."""

    run_id: str
    spec: SearchSpec
    teacher_macs: int
    teacher_val_accuracy: float
    versions: Mapping[str, str]
    git_revision: str | None
    hardware: str

    @classmethod
    def of(cls, run: SearchRun, git_revision: str | None, hardware: str) -> RowContext:
        return cls(run.run_id, run.spec, run.teacher_macs, run.teacher_val_accuracy, dict(run.versions),
                   git_revision, hardware)


def trial_row(ctx: RowContext, trial_id: str, metrics: Mapping[str, Any], error: str | None,
              kind: str = "trial", attempts: int | None = None) -> dict[str, Any]:
    """The leaderboard row of one trial (or final student); ``attempts``: how many times Tune
    started the trial."""
    spec = ctx.spec
    error = error or metrics.get("error")
    plan = json.loads(metrics["plan"]) if metrics.get("plan") else None
    # A trial that failed before reporting has only its parameters: a scorer or distiller it
    # chose is still its own.
    params = json.loads(metrics["params_json"]) if metrics.get("params_json") else {}
    return {
        "run_id": ctx.run_id,
        "trial_id": trial_id,
        "kind": kind,
        "time": dt.datetime.now(dt.timezone.utc),
        "model": spec.model,
        "dataset": spec.dataset,
        "search_space": spec.space,
        "strategy": spec.strategy,
        "scorer": metrics.get("scorer") or params.get("scorer") or spec.scorer,
        "pruner": spec.pruner,
        "distiller": metrics.get("distiller") or params.get("distiller") or spec.distiller,
        "plan": json.dumps(plan, sort_keys=True) if plan else None,
        "ratios": json.dumps(plan["ratios"], sort_keys=True) if plan else None,
        "kernels": json.dumps(plan["kernels"], sort_keys=True) if plan else None,
        # A failed trial's reported accuracy (0) is for the searcher, not a measurement.
        "val_accuracy": None if error else metrics.get("val_accuracy"),
        "val_loss": metrics.get("val_loss"),
        "val_history": metrics.get("val_history"),
        "test_accuracy": metrics.get("test_accuracy"),
        "macs": metrics.get("macs"),
        "params": metrics.get("params"),
        "macs_fraction": metrics.get("macs_fraction"),
        "teacher_macs": ctx.teacher_macs,
        "teacher_accuracy": ctx.teacher_val_accuracy,
        "teacher_test_accuracy": metrics.get("teacher_test_accuracy"),
        "latency_b1_ms": metrics.get("latency_b1_ms"),
        "latency_b256_ms": metrics.get("latency_b256_ms"),
        "epochs": int(metrics.get("epoch") or 0),
        "status": metrics.get("status") or trial_status(metrics, spec.epochs, error),
        "error": error,
        "attempts": attempts,
        "plugin_versions": json.dumps(dict(ctx.versions), sort_keys=True),
        "seed": spec.seed,
        "git_revision": ctx.git_revision,
        "hardware": metrics.get("hardware") or ctx.hardware,
        "node": metrics.get("node"),
        "wall_seconds": metrics.get("trial_seconds"),
        "train_seconds": metrics.get("train_seconds"),
        "prune_seconds": metrics.get("prune_seconds"),
        "overhead_seconds": metrics.get("overhead_seconds"),
        "params_json": metrics.get("params_json"),
    }


def experiment_path(run: SearchRun) -> tuple[str, str]:
    """``(storage_path, experiment name)`` of the run's Tune experiment."""
    if run.spec.storage:
        return run.spec.storage, run.run_id
    return str(run.run_dir.resolve()), "tune"


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:2000] if lines else "trial failed"


def _attempts(trial: Any, failed: bool) -> int | None:
    """How many times ``trial`` started: each counted failure was followed by a retry, except
    the one that ended a failed trial."""
    failures = getattr(trial, "num_failures", None)
    if not isinstance(failures, int):
        return None
    return max(1, failures if failed else failures + 1)


def _metrics(trial: Any) -> dict[str, Any]:
    """The trial's last report, or, when it never reported, its parameters."""
    config = getattr(trial, "config", None) or {}
    params = {"params_json": json.dumps(config, sort_keys=True, default=str)} if config else {}
    return {**params, **(trial.last_result or {})}


class LeaderboardWriter(tune.Callback):
    """Writes each trial's row as soon as it ends, on the driver; rows are keyed by trial, so
    writing one twice (after a resume) replaces it instead of adding a duplicate."""

    def __init__(self, ctx: RowContext, board: Leaderboard) -> None:
        self.ctx = ctx
        self.board = board
        self._host: Host | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The plugin manager holds modules; a restored writer makes a fresh one.
        return {"ctx": self.ctx, "board": self.board, "_host": None}

    def key(self, trial_id: str) -> str:
        return f"{self.ctx.run_id}-{trial_id}"

    def write(self, trial_id: str, metrics: Mapping[str, Any], error: str | None, attempts: int | None = None) -> None:
        row = trial_row(self.ctx, trial_id, metrics, error, attempts=attempts)
        self.board.write([row], key=self.key(trial_id))
        if self._host is None:
            self._host = Host.create()
        self._host.trial_result(self.ctx.run_id, trial_id, row)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.write(trial.trial_id, _metrics(trial), None, _attempts(trial, failed=False))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.write(trial.trial_id, _metrics(trial), _error_text(trial), _attempts(trial, failed=True))


def _scheduler(spec: SearchSpec) -> ASHAScheduler | None:
    """ASHA for ``--scheduler asha`` (None: FIFO, every trial runs all its epochs).

    Rungs at epochs 1, 2, 4, ... below ``spec.epochs`` (2 epochs: one rung, at epoch 1); a trial
    goes on past a rung when its accuracy there is at least the median of those that reached
    it before. Ray's default keeps only the top quarter, which with a dozen short trials stops
    nearly every trial after the first. ASHA is asynchronous (the first trial at a rung always
    passes it), so the kept trial is chosen at an epoch that trials reached alike
    (:func:`prunetune.searching.final.choose_trials`). Ray's synchronous HyperBand is not offered: it
    pauses trials at rungs and resumes them from a checkpoint, and trials start from scratch.
    """
    if spec.scheduler != "asha":
        return None
    return ASHAScheduler(metric="val_accuracy", mode="max", max_t=spec.epochs, grace_period=1,
                         reduction_factor=2, time_attr="epoch")


def _newest(folder: Path, pattern: str) -> Path | None:
    # Tune names its state files by session start time and restores the greatest name.
    files = list(folder.glob(pattern))
    return max(files, key=lambda p: p.name) if files else None


def reconcile_saved_state(experiment_dir: Path, board: Leaderboard, run_id: str) -> tuple[bool, list[str]]:
    """Make a stopped run's saved searcher agree with its saved trial list before Tune restores
    it. Returns whether there is a run for Tune to restore, and the started trials that the list
    lacks and that wrote no row.

    Tune saves both together but copies them to the run folder in the background, file by
    file, so a driver killed mid-copy can leave a trial list older than the searcher. Restored
    as is, the search ends short: Tune never runs a trial it does not list, and a list with no
    trial at all makes Tune start over with a single trial. So the searcher's count goes back to
    the list's length (it proposes as many new trials instead); with no trial listed, Tune's
    state is removed and the trials start afresh.
    """
    import ray.cloudpickle as cloudpickle

    state_file = _newest(experiment_dir, "experiment_state-*.json")
    search_file = _newest(experiment_dir, "search_gen_state-*.json")
    if state_file is None:
        return False, []
    known = {json.loads(trial)["trial_id"] for trial, _ in json.loads(state_file.read_text())["trial_data"]}
    started = {folder.name.split("_")[2] for folder in experiment_dir.glob("run_trial_*")}
    lost = sorted(t for t in started - known if not board.has(f"{run_id}-{t}"))
    if not known:
        for pattern in ("experiment_state-*", "search_gen_state-*", "searcher-state-*", "tuner.pkl"):
            for file in experiment_dir.glob(pattern):
                file.unlink()
        return False, lost
    search = cloudpickle.loads(search_file.read_bytes()) if search_file else None
    if search is not None and search["counter"] > len(known):
        search["counter"], search["finished"] = len(known), False
        limiter = search.get("name:ConcurrencyLimiter")
        if limiter is not None:  # an unlisted trial would hold its concurrency slot for ever
            limiter["live_trials"] = {t for t in limiter["live_trials"] if t in known}
            limiter["num_unfinished_live_trials"] = len(limiter["live_trials"])
        tmp = search_file.with_name(f".{search_file.name}.tmp")
        tmp.write_bytes(cloudpickle.dumps(search))
        os.replace(tmp, search_file)
    return True, lost


def _tuner(run: SearchRun, writer: LeaderboardWriter, resume: bool) -> tune.Tuner:
    spec = run.spec
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, inputs=run.inputs),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )
    storage, name = experiment_path(run)
    if resume:
        path = os.path.join(storage, name)
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    registry = run.host.registry
    space = registry.create("search_space", spec.space, spec.space_options)
    strategy = registry.create("strategy", spec.strategy, spec.strategy_options)
    metrics = [OBJECTIVES[o][0] for o in spec.objectives]
    modes = [OBJECTIVES[o][1] for o in spec.objectives]
    points = run.first_points
    searcher = strategy.searcher(DefineByRun(space, run.structure), metrics, modes, spec.seed, points)
    scheduler = _scheduler(spec)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples,
            max_concurrent_trials=concurrency(spec, ray.cluster_resources()),
            # A worker runs trial after trial (Ray's default starts a process per trial), so it
            # imports torch, loads the plugins and rebuilds the teacher once (see worker_state).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=[writer],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            verbose=1 if spec.progress else 0,
        ),
    )


@contextlib.contextmanager
def _tune_output(progress: bool) -> Iterator[None]:
    """Tune's terminal output only with ``progress``: its newer reporter prints the experiment's
    configuration box whatever the verbosity, its older one prints nothing at verbosity 0."""
    saved = {name: os.environ.get(name) for name in _TUNE_OUTPUT}
    os.environ.update({k: v for k, v in _TUNE_OUTPUT.items() if not progress or k != "RAY_AIR_NEW_OUTPUT"})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def fit_trials(run: SearchRun, board: Leaderboard, ctx: RowContext, resume: bool = False) -> tune.ResultGrid:
    """Run (or continue) the trials; every finished trial ends with exactly one leaderboard row."""
    ensure_ray(run.spec.address)
    writer = LeaderboardWriter(ctx, board)
    lost: list[str] = []
    folder = Path(os.path.join(*experiment_path(run)))
    if resume and folder.is_dir():  # a local or shared folder; a remote one is Tune's alone
        resume, lost = reconcile_saved_state(folder, board, ctx.run_id)
    with _tune_output(run.spec.progress):
        results = _tuner(run, writer, resume).fit()
    # A driver killed between a trial's end and its row leaves the row to write now.
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        if not board.has(writer.key(trial_id)):
            error = str(result.error).strip().splitlines()[-1][:2000] if result.error else None
            writer.write(trial_id, metrics, error)
    # The work of a lost trial died with its driver. Its folder goes now that its worker, which
    # can outlive the driver a moment, is surely gone too.
    for trial_id in lost:
        if not board.has(writer.key(trial_id)):
            for trial_dir in folder.glob(f"run_trial_{trial_id}_*"):
                shutil.rmtree(trial_dir, ignore_errors=True)
    return results
