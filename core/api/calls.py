"""``prunetune.compress`` and ``prunetune.search`` on a live model and the caller's data."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from torch import nn

from prunetune.api.data import DataLike, make_splits
from prunetune.api.student import SearchResult, Student, load
from prunetune.components.data import DataSplits
from prunetune.components.models import live_name
from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.jobs.spec import CompressSpec, JobSpec
from prunetune.searching.spec import SearchSpec
from prunetune.structure.plan import StudentPlan

__all__ = ["compress", "search"]

#: The dataset column of a job whose data a Python caller handed over.
GIVEN_DATA = "given"
#: Settings of a teacher the job would train or load: the caller hands over a trained one.
_TEACHER_SETTINGS = {"model", "model_options", "dataset", "dataset_options", "teacher_epochs", "teacher_lr",
                     "teacher_checkpoint"}


def _echo(progress: bool, callback: Callable[[str], None] | None) -> Callable[[str], None]:
    """Where a job's messages go: ``callback``, else stdout when ``progress``, else nowhere."""
    if callback is not None:
        return callback
    return print if progress else (lambda line: None)


def _spec_fields(cls: type[JobSpec], settings: dict[str, Any], taken: set[str]) -> dict[str, Any]:
    """``settings`` checked to be fields of ``cls`` the call does not set itself."""
    fields = {f.name for f in dataclasses.fields(cls)} - taken
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise UsageError(f"unknown setting(s) {', '.join(unknown)} (valid: {', '.join(sorted(fields))})")
    return settings


def _splits(spec: JobSpec, train: DataLike, val: DataLike | None, test: DataLike | None,
            num_classes: int | None) -> DataSplits:
    """The caller's data split as the spec (already checked) says: its seed and validation share."""
    return make_splits(train, val, test, seed=spec.seed, val_fraction=spec.val_fraction, num_classes=num_classes)


def _check_teacher(teacher: Any) -> nn.Module:
    if not isinstance(teacher, nn.Module):
        raise UsageError(f"teacher must be a torch nn.Module, got {type(teacher).__name__}")
    return teacher


def compress(
    teacher: nn.Module,
    train: DataLike,
    val: DataLike | None = None,
    *,
    test: DataLike | None = None,
    ratio: float | None = None,
    plan: StudentPlan | None = None,
    scorer: str = JobSpec.scorer,
    pruner: str = JobSpec.pruner,
    distiller: str = JobSpec.distiller,
    epochs: int = CompressSpec.epochs,
    num_classes: int | None = None,
    out: str | None = None,
    progress: bool = False,
    callback: Callable[[str], None] | None = None,
    **settings: Any,
) -> Student:
    """Prune the trained ``teacher`` by ``plan`` (or one ``ratio`` for every group; 0.5 when
    neither is given) and distil the student from it on ``train`` for ``epochs``.

    ``train``, ``val`` and ``test`` are ``(images, labels)`` tensors, a ``Dataset`` or a
    ``DataLoader``; ``val`` is held out of ``train`` when not given, and the test
    measurement uses ``val`` when ``test`` is not given. Other ``compress`` settings (``lr``,
    ``batch_size``, ``seed``, ``finetune_epochs``, ``device``, ``scorer_options``...) are keyword
    arguments named as :class:`~prunetune.jobs.spec.CompressSpec` names them. Nothing is
    printed unless ``progress`` (messages and progress bars) or a ``callback`` (messages) asks;
    nothing is written unless ``out`` names a file. The student comes back in eval mode.

    Raises:
        UsageError: bad input (one line saying what is wrong and what is valid).
        TrainingDiverged: the student's training stopped being finite.
    """
    from prunetune.jobs.compress import run_compress

    teacher = _check_teacher(teacher)
    if plan is not None and ratio is not None:
        raise UsageError("give plan or ratio, not both")
    if ratio is not None:
        plan = StudentPlan(ratio=ratio)
    # Settings named as parameters never reach **settings; of the rest, a live call cannot resume from a file.
    settings = _spec_fields(CompressSpec, settings, _TEACHER_SETTINGS | {"start_from"})
    spec = CompressSpec(model=live_name(teacher), dataset=GIVEN_DATA, scorer=scorer, pruner=pruner,
                        distiller=distiller, epochs=epochs, out=out, progress=progress,
                        **({"plan": plan} if plan is not None else {}), **settings)
    data = _splits(spec, train, val, test, num_classes)
    result = run_compress(spec, echo=_echo(progress, callback), data=data, teacher=teacher)
    # In eval mode, as prunetune.load gives it: a forward pass must not move its BatchNorm statistics.
    return Student(result.model.eval(), result.meta)


@contextlib.contextmanager
def _quiet_ray(progress: bool) -> Iterator[None]:
    """Ray's, Tune's and Optuna's own log lines (below warnings) only when ``progress`` asks."""
    loggers = [logging.getLogger(name) for name in ("ray", "ray.tune", "ray.train", "optuna")]
    levels = [lg.level for lg in loggers]
    if not progress:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def search(
    teacher: nn.Module,
    train: DataLike,
    val: DataLike | None = None,
    *,
    test: DataLike | None = None,
    max_macs: float | None = None,
    num_samples: int = SearchSpec.num_samples,
    epochs: int = SearchSpec.epochs,
    final_epochs: int = SearchSpec.final_epochs,
    address: str | None = None,
    num_classes: int | None = None,
    runs: str | Path = SearchSpec.run_root,
    leaderboard: str | Path = SearchSpec.leaderboard,
    progress: bool = False,
    callback: Callable[[str], None] | None = None,
    **settings: Any,
) -> SearchResult:
    """Search per-group pruning ratios and kernel sizes of students of the trained ``teacher``
    with Ray Tune (an embedded Ray, or the cluster at ``address``) within ``max_macs`` of its
    MACs, ``num_samples`` trials of ``epochs``; the best is distilled again for ``final_epochs``.

    Data as for :func:`compress`; the trials are ranked on ``val``, the kept student measured
    on ``test``. The teacher and the data reach the Ray workers through its object store. The
    run's folder is written under ``runs`` and its rows into ``leaderboard``, as the command
    line does. Other settings (``space``, ``strategy``, ``objectives``, ``max_latency``,
    ``gpus_per_trial``, ``scheduler``, ``name``...) are keyword arguments named as
    :class:`~prunetune.searching.spec.SearchSpec` names them.

    Raises:
        UsageError: bad input (one line saying what is wrong and what is valid).
    """
    from prunetune.results.leaderboard import Leaderboard
    from prunetune.searching.run import run_search

    teacher = _check_teacher(teacher)
    # Settings named as parameters never reach **settings; run_root is the parameter runs.
    settings = _spec_fields(SearchSpec, settings, _TEACHER_SETTINGS | {"run_root"})
    spec = SearchSpec(model=live_name(teacher), dataset=GIVEN_DATA, max_macs=max_macs, num_samples=num_samples,
                      epochs=epochs, final_epochs=final_epochs, address=address, run_root=str(runs),
                      leaderboard=str(leaderboard), progress=progress, **settings)
    data = _splits(spec, train, val, test, num_classes)
    host = Host.create()
    with _quiet_ray(progress):
        summary = run_search(spec, host=host, echo=_echo(progress, callback), data=data, teacher=teacher)
    students = [load(path, teacher, host) for path in summary["students"]]
    rows = Leaderboard(spec.with_absolute_paths().leaderboard).rows(run_id=summary["run_id"])
    return SearchResult(summary["run_id"], Path(summary["run_dir"]), students, summary["teacher"], rows)
