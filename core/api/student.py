"""A compressed model as the Python API returns it, saved and loaded."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from torch import nn

from prunetune.host.manager import Host
from prunetune.results.checkpoint import load_student, save_student
from prunetune.structure.plan import StudentPlan

__all__ = ["SearchResult", "Student", "load"]


@dataclasses.dataclass
class Student:
    """A student model with its description (the plan, the components that built it, its
    measurements), as compress and search write it."""

    model: nn.Module
    meta: dict[str, Any]

    @property
    def plan(self) -> StudentPlan:
        """The per-group ratios and per-conv kernel sizes it was built with."""
        return StudentPlan.from_dict(self.meta["plan"])

    @property
    def metrics(self) -> dict[str, Any]:
        """Its measurements when made: test ``accuracy`` (%), ``val_accuracy``, ``macs``,
        ``params``, ``latency_b1_ms``, ``latency_b256_ms`` (empty for a student never measured)."""
        return dict(self.meta.get("metrics", {}))

    @property
    def teacher_metrics(self) -> dict[str, Any]:
        """The teacher's measurements on the same test split."""
        return dict(self.meta.get("teacher_metrics", {}))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the student (its description and weights; no pickled code) to ``path``."""
        save_student(path, self.model, self.meta)
        return Path(path)

    def export(self, path: str | os.PathLike[str], format: str = "onnx") -> float:  # noqa: A002 - as the CLI names it
        """Export the student as ``onnx``, ``torchscript`` or ``exported-program`` to ``path``
        (see ``prunetune export``); returns the largest difference of its logits from the
        student's, at most 1e-4, or nothing is written.

        Raises:
            UsageError: an unknown format, ONNX without its packages, or an export that fails
                or differs from the student.
        """
        from prunetune.jobs.export import export_model

        return export_model(self.model, tuple(self.meta["input_shape"]), format, path)


def load(path: str | os.PathLike[str], model: str | nn.Module | None = None, host: Host | None = None) -> Student:
    """The student saved at ``path``, in eval mode.

    ``model`` is what the file cannot choose for you: the ``package.module:factory`` of a
    student built from one, or the teacher object a student of a Python-given model came from.

    Raises:
        UsageError: the file is missing, not a prunetune student, names code or a model object
            not given, or its weights do not fit its plan.
    """
    net, meta = load_student((host or Host.create()).registry, path, model)
    return Student(net, meta)


@dataclasses.dataclass
class SearchResult:
    """What a search left: its run, the kept student(s) and every row it wrote."""

    run_id: str
    run_dir: Path
    students: list[Student]  # best first; several on a Pareto search
    teacher_metrics: dict[str, Any]
    rows: list[dict[str, Any]]  # the run's leaderboard rows, trials and final students

    @property
    def best(self) -> Student | None:
        """The kept student (None when no trial finished within the budget)."""
        return self.students[0] if self.students else None

    @property
    def trials(self) -> list[dict[str, Any]]:
        """The trials' leaderboard rows."""
        return [row for row in self.rows if row["kind"] == "trial"]
