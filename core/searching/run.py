"""The search: Ray Tune + a strategy's searcher over a search space, keeping the best student.

Flow: resolve and check everything the user named -> data and teacher (once, on the driver)
-> shared inputs into Ray's object store -> ``Tuner`` with the strategy's searcher (the uniform
plan meeting the budget evaluated first) -> a leaderboard row per finished trial -> the best
feasible trial (or each Pareto point) distilled again and measured once on the test split ->
``best_student.pt``, ``pareto.png`` and ``summary.txt`` in the run folder.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunetune.components.cluster import loopback_ray
from prunetune.components.data import DataSplits
from prunetune.host.manager import Host
from prunetune.results.leaderboard import Leaderboard
from prunetune.searching.prepare import SearchRun, prepare_search
from prunetune.searching.resources import check_local_fit, local_resources
from prunetune.searching.spec import SCREEN_FILE, SPEC_FILE, SearchSpec

__all__ = ["hardware", "run_search"]


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def hardware() -> str:
    """A one-line description of this machine."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}"


def _write_screen(run: SearchRun) -> None:
    """``screen.json`` in the run folder: every screened plan, best proxy first, and whether the
    searcher tries it first."""
    first = run.first_points
    rows = [{**r.to_dict(), "macs_fraction": r.macs / run.teacher_macs, "tried_first": dict(r.params) in first}
            for r in run.screened]
    (run.run_dir / SCREEN_FILE).write_text(json.dumps({"sampled": run.spec.screen, "results": rows}, indent=1))


def run_search(spec: SearchSpec, resume: str | None = None, host: Host | None = None,
               echo: Callable[[str], None] = print, data: DataSplits | None = None,
               teacher: nn.Module | None = None) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) a search; return the summary of its best student(s).

    ``data`` and ``teacher`` are a Python caller's own, used instead of the dataset and model
    ``spec`` names (see :func:`prunetune.jobs.setup.set_up_job`).
    """
    if spec.address is None:
        check_local_fit(spec.cpus_per_trial, spec.gpus_per_trial, local_resources())
        loopback_ray()  # nothing outside this machine needs to reach an embedded Ray
    from prunetune.searching.final import finish_run
    from prunetune.searching.tuning import RowContext, fit_trials  # Ray and Optuna load only here

    spec = spec.with_absolute_paths()
    run_dir = Path(resume).resolve() if resume else None
    prepared = prepare_search(spec, host, run_dir.name if run_dir else None, echo, run_dir, data=data, teacher=teacher)
    prepared.run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (prepared.run_dir / SPEC_FILE).write_text(spec.to_json())
        if spec.screen > 0:
            _write_screen(prepared)
    board = Leaderboard(spec.leaderboard)
    ctx = RowContext.of(prepared, _git_revision(), hardware())
    fit_trials(prepared, board, ctx, resume=resume is not None)
    return finish_run(prepared, board, ctx, echo)
