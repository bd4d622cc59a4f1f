"""Methods d and e of :mod:`benchmarks.quality`: ``prunetune search``, then ``prunetune compress``."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.quality_common import CONTROLLED, Bench, Teacher, find, slug
from prunetune.errors import UsageError
from prunetune.jobs.spec import JobSpec
from prunetune.searching.spec import SearchSpec
from prunetune.structure.plan import StudentPlan

__all__ = ["compressed", "parse_search_args", "prunetune_method", "searched", "trial_checkpoint", "warm_started"]


def parse_search_args(text: str) -> dict[str, Any]:
    """``--search-args``: extra SearchSpec fields as a JSON object.

    Raises:
        UsageError: not a JSON object, an unknown field, or one the benchmark sets itself.
    """
    try:
        extra = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--search-args is not JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise UsageError("--search-args must be a JSON object of SearchSpec fields")
    known = {f.name for f in dataclasses.fields(SearchSpec)}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise UsageError(f"--search-args: SearchSpec has no {', '.join(unknown)} "
                         f"(fields: {', '.join(sorted(known))})")
    taken = sorted(set(extra) & set(CONTROLLED))
    if taken:
        raise UsageError(f"--search-args: {', '.join(taken)} are set by the benchmark's own flags")
    return extra


def searched(bench: Bench, teacher: Teacher, budget: float, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``prunetune search`` under the budget; the best trial's row and what the search did."""
    import ray

    from prunetune.results.leaderboard import Leaderboard
    from prunetune.searching.final import choose_trials
    from prunetune.searching.run import run_search

    args = bench.args
    name = f"{slug(teacher.name)}-q{round(budget * 100):02d}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    settings: dict[str, Any] = {"max_concurrent": args.threads, **bench.search_args}
    spec = SearchSpec(
        model=teacher.name, dataset="idx",
        dataset_options={"path": args.data, "limit": min(args.subset, args.limit or args.subset)},
        teacher_checkpoint=str(teacher.path), max_macs=budget, num_samples=args.trials, epochs=args.trial_epochs,
        final_epochs=0, seed=seed, val_fraction=args.search_val_fraction, run_root=str(args.out / "runs"),
        name=name, leaderboard=str(args.out / "leaderboard"), progress=False, **settings,
    )
    try:
        run_search(spec, echo=lambda _: None)
    finally:
        ray.shutdown()  # as when the user's `prunetune search` exits; nothing left running
        torch.set_num_threads(args.threads)
    rows = Leaderboard(spec.leaderboard).rows(run_id=name)
    chosen = choose_trials(rows, multi_objective=len(spec.objectives) > 1)
    if not chosen:
        raise RuntimeError(f"search {name} kept no student (see {args.out / 'runs' / name})")
    trials = [r for r in rows if r["kind"] == "trial"]
    info = {"run_id": name, "best_trial": chosen[0]["trial_id"], "best_val_accuracy": chosen[0]["val_accuracy"],
            "trials": len(trials), "ok": sum(r["status"] == "ok" for r in trials)}
    return chosen[0], info


def compressed(bench: Bench, teacher: Teacher, row: dict[str, Any], seed: int, name: str,
               start_from: Path | None = None) -> nn.Module:
    """``prunetune compress --plan`` with the trial's plan and components, F epochs in all; with
    ``start_from``, ``--from`` that checkpoint of the trial instead of ``--plan``."""
    from prunetune.jobs.compress import run_compress
    from prunetune.jobs.spec import CompressSpec

    args = bench.args
    params = json.loads(row["params_json"] or "{}")
    shared = {k: v for k, v in bench.search_args.items() if k in {f.name for f in dataclasses.fields(JobSpec)}}
    (args.out / "students").mkdir(exist_ok=True)
    spec = CompressSpec(
        model=teacher.name, dataset="idx", dataset_options={"path": args.data, "limit": args.limit},
        teacher_checkpoint=str(teacher.path),
        **({"start_from": str(start_from)} if start_from else {"plan": StudentPlan.from_dict(json.loads(row["plan"]))}),
        scorer=row["scorer"], distiller=row["distiller"],
        distiller_options={k: params[k] for k in ("T", "alpha") if k in params},
        epochs=args.epochs, seed=seed, device="cpu",
        out=str(args.out / "students" / f"{name}.pt"), progress=False, **shared,
    )
    return run_compress(spec, echo=lambda _: None).model


def prunetune_method(bench: Bench, teacher: Teacher, budget: float, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """d: the search, then compress with the best plan."""
    start = time.perf_counter()
    row, info = searched(bench, teacher, budget, seed)
    search_seconds = time.perf_counter() - start
    start = time.perf_counter()
    student = compressed(bench, teacher, row, seed, info["run_id"])
    final_seconds = time.perf_counter() - start
    return student, {**info, "plan": json.loads(row["plan"]), "scorer": row["scorer"], "distiller": row["distiller"],
                     "search_seconds": search_seconds, "final_seconds": final_seconds,
                     "wall_seconds": search_seconds + final_seconds}


def trial_checkpoint(run_dir: Path, trial_id: str) -> Path | None:
    """The last checkpoint a search trial kept (``student.pt`` in Tune's trial folder)."""
    files = sorted(run_dir.glob(f"tune/run_trial_{trial_id}_*/checkpoint_*/student.pt"))
    return files[-1] if files else None


def warm_started(bench: Bench, teacher: Teacher, results: list[dict[str, Any]], budget: float,
                 seed: int) -> tuple[nn.Module, dict[str, Any]] | str:
    """e: d's best trial, trained on from its checkpoint for F epochs; or why it cannot run."""
    from prunetune.results.leaderboard import Leaderboard

    d = find(results, teacher.name, "d", budget, seed)
    if d is None:
        return f"e skipped for {teacher.name} {budget:.0%} seed {seed}: d has not run"
    checkpoint = trial_checkpoint(bench.args.out / "runs" / d["run_id"], d["best_trial"])
    rows = [r for r in Leaderboard(bench.args.out / "leaderboard").rows(run_id=d["run_id"])
            if r["trial_id"] == d["best_trial"]]
    if checkpoint is None or not rows:
        return f"e skipped for {teacher.name} {budget:.0%} seed {seed}: trial {d['best_trial']} left no checkpoint"
    start = time.perf_counter()
    student = compressed(bench, teacher, rows[0], seed, f"{d['run_id']}-warm", start_from=checkpoint)
    final_seconds = time.perf_counter() - start
    return student, {"run_id": d["run_id"], "best_trial": d["best_trial"], "plan": d["plan"],
                     "started_from": str(checkpoint), "search_seconds": d["search_seconds"],
                     "final_seconds": final_seconds, "wall_seconds": d["search_seconds"] + final_seconds}
