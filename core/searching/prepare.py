"""A search prepared on the driver: everything the user named resolved and checked, the data
and the teacher loaded (trained once if needed), the latency table timed, and the first plans
(uniform, sensitivity, screened) that the searcher tries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from prunetune.components.data import DataSplits
from prunetune.components.scoring import calibration_batches
from prunetune.components.spaces import DefineByRun, ModelStructure, SearchSpace
from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.jobs.setup import JobSetup, set_up_job
from prunetune.searching.spec import SearchSpec
from prunetune.searching.trial import LATENCY_METRIC, TrialInputs
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan
from prunetune.student.budget import CostLimit, MacsCounter, repair
from prunetune.student.latency import LatencyTable, latency_table
from prunetune.student.proxy import ProxyData, Screened
from prunetune.student.proxy import screen as screen_plans
from prunetune.student.sensitivity import group_sensitivity, sensitivity_plan
from prunetune.training.devices import select_device
from prunetune.training.loop import evaluate, teacher_logits_for

__all__ = ["SENSITIVITY_POWERS", "SearchRun", "prepare_search"]


@dataclasses.dataclass
class SearchRun:
    """A prepared search: everything resolved, the teacher ready, nothing searched yet."""

    spec: SearchSpec
    run_id: str
    run_dir: Path
    host: Host
    data: DataSplits
    teacher: torch.nn.Module
    teacher_source: str
    teacher_macs: int
    teacher_val_accuracy: float
    structure: ModelStructure
    inputs: TrialInputs
    baseline: dict[str, Any] | None
    versions: dict[str, str]
    seeded: tuple[dict[str, Any], ...] = ()
    screened: tuple[Screened, ...] = ()  # best proxy first (``--screen``)
    uniform_plan: StudentPlan | None = None  # the standard recipe's plan for the MACs budget (None: no budget)

    @property
    def first_points(self) -> list[dict[str, Any]]:
        """What the searcher evaluates first: the uniform plan, the sensitivity plans, then the
        best screened plans, as many as leave the searcher at least one trial of its own
        (``num_samples`` - the points before them - 1)."""
        points = [p for p in (self.baseline, *self.seeded) if p]
        points = [p for i, p in enumerate(points) if p not in points[:i]]
        room = self.spec.num_samples - len(points) - 1
        for result in self.screened:
            if room <= 0:
                break
            if result.params not in points:
                points.append(dict(result.params))
                room -= 1
        return points


def _run_id(spec: SearchSpec) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return spec.name or f"{re.sub(r'[^A-Za-z0-9_-]', '-', spec.model)}-{spec.dataset}-{stamp}"


def _check_folder(path: str, option: str) -> None:
    """A folder that a run writes into: an existing folder, or one that can be made."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {path!r} is a file, not a folder")
    existing = next(p for p in (folder.resolve(), *folder.resolve().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path!r} cannot be written ({str(existing)!r} is not a writable folder)")


def _check_reachable(model: torch.nn.Module, example: torch.Tensor, spec: SearchSpec,
                     latency: LatencyTable | None = None) -> None:
    """Refuse a budget that not even the most-pruned plan (every group cut by ``max_ratio``,
    the teacher's kernel sizes) meets; MACs (and the table's latencies) depend on the
    architecture alone. The latency budget is checked when ``latency`` (bound) is given."""
    cap = spec.latency_cap
    if latency is not None and isinstance(cap, float):
        fastest = latency.predict(StudentPlan(ratio=spec.max_ratio, round_to=spec.round_to))
        if fastest > cap:
            slowest = latency.predict(StudentPlan())
            raise UsageError(
                f"no plan can meet --max-latency {cap:g}: cutting every group by --max-ratio {spec.max_ratio:g} "
                f"still takes {fastest:.1f} ms per batch of {spec.latency_batch} on {spec.latency_threads} thread(s) "
                f"(reachable: {math.ceil(fastest * 10) / 10:g} ms to {slowest:.1f} ms, the teacher; or a higher --max-ratio)"
            )
    if spec.max_macs is None:
        return
    counter = MacsCounter(model, example)
    least = counter.macs(StudentPlan(ratio=spec.max_ratio, round_to=spec.round_to))
    full = counter.macs(StudentPlan())
    if least > spec.max_macs * full:
        raise UsageError(
            f"no plan can meet --max-macs {spec.max_macs:g}: cutting every group by --max-ratio "
            f"{spec.max_ratio:g} keeps {least / full:.3f} of the teacher's MACs "
            f"(valid: --max-macs {math.ceil(least / full * 1000) / 1000:g} to 1, or a higher --max-ratio)"
        )


def prepare_search(spec: SearchSpec, host: Host | None = None, run_id: str | None = None,
                   echo: Callable[[str], None] = print, run_dir: Path | None = None,
                   for_search: bool = True, data: DataSplits | None = None,
                   teacher: torch.nn.Module | None = None) -> SearchRun:
    """Resolve and check everything, then load data and the teacher (trained once if needed).

    ``run_dir`` (with ``run_id``) is the folder of an existing run. ``for_search=False``
    prepares only what a single trial needs (``prunetune rerun``): nothing will be written, so
    the output folders are not checked, and no first points are computed. ``data`` and
    ``teacher`` are a Python caller's own (see :func:`prunetune.jobs.setup.set_up_job`).

    Raises:
        UsageError: any bad input, before anything is trained or written.
    """
    resuming = run_dir is not None
    run_id = run_id or _run_id(spec)
    run_dir = run_dir or Path(spec.run_root) / run_id
    if not resuming and run_dir.exists():
        raise UsageError(f"run folder {str(run_dir)!r} exists: continue it with --resume {run_dir}, or pick another --name")
    if for_search:
        _check_folder(spec.run_root, "--runs")
        _check_folder(spec.leaderboard, "--leaderboard")
    setup, untrained = set_up_job(spec, host, [("search_space", spec.space, spec.space_options),
                                               ("strategy", spec.strategy, spec.strategy_options)], data, teacher)
    data = setup.data
    _check_reachable(untrained, data.train_x[:1], spec)
    # Timed before the teacher trains and any trial starts: nothing else runs on these cores.
    table = None
    if for_search or spec.latency_cap != "none":  # a rerun repairs plans as its trial did
        sizes = {*setup.component("search_space").kernel_sizes(), *setup.component("strategy").kernel_sizes()}
        table = _latency_table(sizes, spec, untrained, data.train_x[:1], echo)
    device = select_device("auto")
    teacher, source = setup.obtain_teacher(device, echo)
    example = data.train_x[:1].to(device)
    structure = ModelStructure.of(teacher, example)
    teacher_macs, _ = count_macs_params(teacher, data.input_shape)
    teacher_val, _ = evaluate(teacher, data.val_x, data.val_y, device)
    distiller = setup.component("distiller")
    logits = teacher_logits_for(teacher, data.train_x, device) if distiller.uses_teacher else None
    budget = int(spec.max_macs * teacher_macs) if spec.max_macs is not None else None

    space = setup.component("search_space")
    uniform = _uniform_ratio(teacher, budget, example.cpu(), spec)
    uniform_plan = StudentPlan(ratio=uniform, round_to=spec.round_to) if budget is not None else None
    cap = spec.latency_cap
    budget_ms = cap if isinstance(cap, float) else None
    if cap == "uniform" and table is not None and uniform_plan is not None:
        budget_ms = table.predict(uniform_plan)  # searched students are never slower than it
    bound = DefineByRun(space, structure)
    baseline = bound.baseline(uniform) if for_search else None
    seeded = _sensitivity_points(setup, bound, teacher, budget, uniform,
                                 (table, budget_ms)) if for_search else ()
    inputs = TrialInputs(
        model=setup.model, teacher_state={k: v.detach().cpu() for k, v in teacher.state_dict().items()},
        train_x=data.train_x, train_y=data.train_y, val_x=data.val_x, val_y=data.val_y,
        teacher_logits=logits, spec=spec, teacher_macs=teacher_macs, budget_macs=budget,
        latency_table=table, budget_latency_ms=budget_ms,
    )
    # Not when resuming: a restored searcher has had its first points already.
    screened = (_screened(setup, space, structure, teacher, budget, inputs.calibration_batches,
                          device, echo, (table, budget_ms)) if for_search and not resuming and spec.screen > 0 else ())
    return SearchRun(spec, run_id, run_dir, setup.host, data, teacher.cpu(), source, teacher_macs, teacher_val,
                     structure, inputs, baseline, setup.versions, seeded, screened, uniform_plan)


def _latency_table(sizes: set[int], spec: SearchSpec, model: torch.nn.Module, example: torch.Tensor,
                   echo: Callable[[str], None]) -> LatencyTable:
    """The model's latency table at the spec's batch and threads, timing every kernel size the
    space (or strategy) may pick (``sizes``); cached once the latency budget is known to be reachable."""
    table = latency_table(model, example.cpu(), spec.latency_batch, spec.latency_threads, sorted(sizes), save=False)
    _check_reachable(model, example, spec, table)
    if not table.cached:
        table.save()
    where = "from the cache" if table.cached else f"measured in {table.seconds:.1f} s"
    echo(f"latency table: {where} (batch {spec.latency_batch}, {spec.latency_threads} thread(s))")
    return table


def _uniform_ratio(teacher: torch.nn.Module, budget: int | None, example: torch.Tensor, spec: SearchSpec) -> float:
    """The single ratio of the standard recipe: the smallest meeting the budget (0.5 without one)."""
    if budget is None:
        return 0.5
    fix = repair(teacher.cpu(), StudentPlan(ratio=0.0, round_to=spec.round_to), budget, example, spec.max_ratio)
    return max(fix.plan.ratios.values(), default=fix.plan.ratio)


# How much harder the least sensitive groups are cut, in the order the searcher tries them:
# 0.5 first (alone, it was the best trial of four of the quality benchmark's six searches),
# then 1.0 and 0.25 on either side of it.
SENSITIVITY_POWERS = (0.5, 1.0, 0.25)


def _latency_limits(latency: tuple[LatencyTable | None, float | None], counter: MacsCounter) -> list[CostLimit]:
    """The latency budget as the trials' repair meets it (none without a table and budget)."""
    table, budget_ms = latency
    if table is None or budget_ms is None:
        return []
    return [CostLimit(LATENCY_METRIC, table.bind(counter).predict, budget_ms)]


def _sensitivity_points(setup: JobSetup, bound: DefineByRun, teacher: torch.nn.Module, budget: int | None,
                        uniform: float, latency: tuple[LatencyTable | None, float | None] = (None, None),
                        ) -> tuple[dict[str, Any], ...]:
    """Plans that cut the groups least hurt by pruning hardest, within the budget (and the
    latency budget, by ``latency``'s table), at each of :data:`SENSITIVITY_POWERS`, in the
    space's terms; none without a budget or where the space has no per-group ratios."""
    spec, data = cast(SearchSpec, setup.spec), setup.data
    if budget is None or bound.on_grid({}) is None:
        return ()
    # Training images: validation ranks the trials and stays unseen until then.
    x, y = data.train_x[:512].cpu(), data.train_y[:512].cpu()
    calibration = calibration_batches(x, y)
    teacher = teacher.cpu()
    # The run's own pruner and scorer: the plans' sensitivities are those of the students it builds.
    pruner, scorer = setup.component("pruner"), setup.component("scorer")
    sensitivity = group_sensitivity(teacher, list(bound.structure.groups), uniform, pruner, scorer, x, y, calibration)
    counter = MacsCounter(teacher, x[:1])

    def on_grid(ratios: dict[str, float]) -> dict[str, float]:
        return bound.on_grid(ratios) or {}

    limits = _latency_limits(latency, counter)
    plans = [sensitivity_plan(teacher, sensitivity, budget, x[:1], spec.max_ratio, power, counter, on_grid, limits)
             for power in SENSITIVITY_POWERS]
    points = (bound.with_ratios(plan.ratios) for plan in plans if plan is not None)
    return tuple(point for point in points if point)


def _screened(setup: JobSetup, space: SearchSpace, structure: ModelStructure,
              teacher: torch.nn.Module, budget: int | None, scorer_batches: int,
              device: torch.device, echo: Callable[[str], None],
              latency: tuple[LatencyTable | None, float | None] = (None, None)) -> tuple[Screened, ...]:
    """``spec.screen`` random plans of the space under the budget (and the latency budget, by
    ``latency``'s table), ranked by the adaptive-BN proxy (see :mod:`prunetune.student.proxy`); none
    without a budget, where the least pruned plan would win."""
    spec, data = cast(SearchSpec, setup.spec), setup.data
    if budget is None:
        echo(f"screen: skipped, --screen {spec.screen} needs a --max-macs budget")
        return ()
    started = time.perf_counter()
    # BatchNorm statistics from training images; accuracy on validation images, which trials
    # never train on (the proxy only ranks, as validation does).
    proxy_data = ProxyData.of((data.train_x, data.train_y), (data.val_x, data.val_y), spec.seed,
                              scorer_batches=scorer_batches)
    # One counter (a teacher copy per kernel set) for the screen's repair and its latency limit.
    counter = MacsCounter(teacher.cpu(), data.train_x[:1].cpu())
    results = screen_plans(
        teacher, space, structure, setup.component("scorer"), setup.component("pruner"), proxy_data, spec.screen,
        spec.seed,
        budget_macs=budget, max_ratio=spec.max_ratio, round_to=spec.round_to,
        scorer_named=lambda name: setup.registry.create("scorer", name,
                                                        spec.scorer_options if name == spec.scorer else {}),
        device=device, limits=_latency_limits(latency, counter), counter=counter,
    )
    best = f"best proxy {results[0].proxy_accuracy:.2f}%" if results else "none within the budget"
    within = f" ({len(results)} within the budget)" if len(results) < spec.screen else ""
    echo(f"screened {spec.screen} plans{within} in {time.perf_counter() - started:.1f} s; {best}")
    return tuple(results)
