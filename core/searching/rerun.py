"""``prunetune rerun``: train one search trial again from its leaderboard row, and compare.

The run's ``search.json`` gives the search's data, teacher (from the cache: only the student is
trained) and trial inputs (:func:`prunetune.searching.prepare.prepare_search`); the row's parameters give
the trial's candidate. The trial's code path then runs again in this process, without Ray, with
the torch thread count the trial had. Nothing is written: no leaderboard row, no run file.

A trial that trained on the CPU is compared exactly by default. GPU arithmetic is not bit-exact
(cuDNN chooses its algorithms at run time, some kernels add in any order, another GPU model
rounds differently), so a GPU trial is rerun on this machine's GPU and compared within
:data:`GPU_TOLERANCE` points by default. On a machine without a CUDA GPU it is refused unless a
tolerance is given; it is then rerun on the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from prunetune.components.models import check_model_named
from prunetune.errors import UsageError
from prunetune.results.leaderboard import Leaderboard
from prunetune.results.report import format_table
from prunetune.searching.prepare import prepare_search
from prunetune.searching.spec import SPEC_FILE, SearchSpec
from prunetune.searching.trial import (
    TrialInputs,
    distill_candidate,
    make_candidate_student,
    repaired_candidate,
    worker_state,
)
from prunetune.structure.measure import count_macs_params
from prunetune.training.devices import describe_device, torch_threads

__all__ = ["GPU_TOLERANCE", "RERUNNABLE", "TrialRerun", "find_trial", "is_gpu_row", "rerun_trial", "retrain_trial"]

#: Default tolerance, in accuracy points, of a trial that trained on a GPU.
GPU_TOLERANCE = 1.0
#: Statuses of the rows that can be rerun: the others never trained, or failed.
RERUNNABLE = ("ok", "stopped")
_SHOWN = 5  # ids listed in a message


def _few(names: Sequence[str]) -> str:
    if not names:
        return "none"
    more = f", ... ({len(names)} in all)" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def is_gpu_row(row: Mapping[str, Any]) -> bool:
    """Whether the row's ``hardware`` names a GPU (trials write ``cpu xN`` or the GPU's name)."""
    hardware = row.get("hardware") or ""
    return bool(hardware) and not hardware.startswith("cpu") and "no GPU" not in hardware


def find_trial(run_id: str, trial_id: str, runs: str = "runs", leaderboard: str | None = None,
               model: str | None = None) -> tuple[SearchSpec, dict[str, Any]]:
    """The run's settings and the trial's leaderboard row.

    Args:
        run_id: The run folder's name in ``runs``.
        trial_id: The trial's id on the leaderboard.
        runs: The folder of run folders.
        leaderboard: The leaderboard folder (default: the one the run wrote to).
        model: The ``package.module:factory`` the user names, as ``search --resume`` takes it.

    Raises:
        UsageError: no such run, run folder without ``search.json``, a ``module:factory``
            model the user did not name, no such trial, or a trial that cannot be rerun.
    """
    if not run_id or Path(run_id).name != run_id or run_id in (".", ".."):
        raise UsageError(f"run id {run_id!r} must be the name of a run folder, not a path")
    folder = Path(runs)
    run_dir = folder / run_id
    if not run_dir.is_dir():
        known = sorted(p.parent.name for p in folder.glob(f"*/{SPEC_FILE}")) if folder.is_dir() else []
        raise UsageError(f"no run {run_id!r} in runs folder {runs!r} (runs: {_few(known)})")
    path = run_dir / SPEC_FILE
    if not path.is_file():
        raise UsageError(f"{str(run_dir)!r} is not a run folder (it has no {SPEC_FILE})")
    spec = SearchSpec.from_json(path.read_text(errors="replace"), source=str(path))
    check_model_named(spec.model, model, f"run {run_id!r}")
    board = leaderboard or spec.leaderboard
    rows = Leaderboard(board).rows(run_id=run_id, kind="trial")
    if not rows:
        raise UsageError(f"leaderboard {board!r} has no trials of run {run_id!r} (pass the search's --leaderboard)")
    row = next((r for r in rows if r["trial_id"] == trial_id), None)
    if row is None:
        valid = [r["trial_id"] for r in rows if r["status"] in RERUNNABLE]
        raise UsageError(f"run {run_id!r} has no trial {trial_id!r} (trials: {_few(valid)})")
    if row["status"] not in RERUNNABLE:
        why = "over the MACs budget, never trained" if row["status"] == "infeasible" else "it failed"
        raise UsageError(f"trial {trial_id!r} of run {run_id!r} is {row['status']} ({why}): "
                         f"only {' and '.join(RERUNNABLE)} trials can be rerun")
    if not row["params_json"] or not row["epochs"]:
        raise UsageError(f"trial {trial_id!r} of run {run_id!r} has no parameters or epochs on the leaderboard")
    return spec, row


class _Enough(Exception):
    """Ends distillation at the epoch the trial stopped at."""


def retrain_trial(inputs: TrialInputs, params: Mapping[str, Any], epochs: int | None = None) -> dict[str, Any]:
    """Train the trial of ``params`` as :func:`prunetune.searching.trial.run_trial` does, without Tune.

    Args:
        inputs: The search's trial inputs.
        params: The trial's parameters, as Tune suggested them.
        epochs: Stop after this epoch, as the scheduler stopped the trial; the schedule still
            spans ``inputs.spec.epochs`` (default: all of them).

    Returns:
        ``plan`` (JSON, after budget repair), ``feasible``, ``macs``, ``hardware`` and, for a
        feasible plan, ``scorer``, ``distiller``, ``epoch``, ``val_accuracy``, ``val_loss``.
    """
    with torch_threads(max(1, int(inputs.spec.cpus_per_trial))):
        state = worker_state(inputs)
        candidate, fix = repaired_candidate(state, inputs, params)
        result: dict[str, Any] = {"feasible": True, "hardware": describe_device(state.device)}
        if fix is not None and not fix.feasible:
            return {**result, "feasible": False, "macs": fix.macs, "plan": json.dumps(fix.plan.to_dict(), sort_keys=True)}
        student, _, meta = make_candidate_student(state.registry, inputs, state.teacher, candidate, state.device)
        macs, _ = count_macs_params(student, inputs.model.input_shape)
        result.update(macs=macs, plan=json.dumps(candidate.plan.to_dict(), sort_keys=True),
                      scorer=meta["scorer"], distiller=meta["distiller"])
        last = epochs or inputs.spec.epochs

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            result.update(epoch=epoch, val_accuracy=metrics["val_accuracy"], val_loss=metrics["val_loss"])
            if epoch >= last:
                raise _Enough

        with contextlib.suppress(_Enough):
            distill_candidate(state, inputs, candidate, student, inputs.spec.epochs, on_epoch)
    return result


@dataclasses.dataclass(frozen=True)
class TrialRerun:
    """A trial's leaderboard row and what training it again gave."""

    row: Mapping[str, Any]
    now: Mapping[str, Any]  # as retrain_trial returns it
    tolerance: float
    teacher_source: str

    @property
    def difference(self) -> float | None:
        """Validation accuracy now minus the row's, in points; None when the plan is now infeasible."""
        if not self.now["feasible"]:
            return None
        return float(self.now["val_accuracy"]) - float(self.row["val_accuracy"])

    @property
    def reproduced(self) -> bool:
        return self.difference is not None and abs(self.difference) <= self.tolerance

    def notes(self) -> list[str]:
        """What else differs from the row, each in one line."""
        row, now = self.row, self.now
        lines = []
        if not now["feasible"]:
            lines.append("the trial's plan no longer meets the run's MACs budget: it was not trained")
        if now["plan"] != row["plan"]:
            lines.append("the rebuilt plan differs from the row's (budget repair changed?)")
        for name in ("scorer", "distiller"):
            if now["feasible"] and now[name] != row[name]:
                lines.append(f"the {name} is {now[name]}, the row's {row[name]}")
        return lines

    def report(self) -> str:
        """The table of row against rerun, the notes, and ``reproduced`` or ``differs by X pts``."""
        row, now = self.row, self.now
        epochs = f"{row['epochs']} epoch{'s' if row['epochs'] != 1 else ''}"
        head = (f"trial {row['trial_id']} of run {row['run_id']} ({row['status']}, {epochs}, seed {row['seed']}): "
                f"trained on {row['hardware']}, rerun on {now['hardware']}; teacher from {self.teacher_source}")

        def number(value: Any, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        table = format_table(("", "leaderboard", "now"), [
            ("validation accuracy (%)", number(row["val_accuracy"], ".2f"), number(now.get("val_accuracy"), ".2f")),
            ("validation loss", number(row["val_loss"], ".4f"), number(now.get("val_loss"), ".4f")),
            ("MACs", number(row["macs"], ","), number(now.get("macs"), ",")),
        ])
        lines = [head, table, *(f"note: {n}" for n in self.notes())]
        if is_gpu_row(row) and self.tolerance > 0:
            lines.append(f"note: GPU arithmetic is not bit-exact: compared within {self.tolerance:g} pts")
        diff = self.difference
        within = f" (within {self.tolerance:g} pts)" if self.tolerance > 0 else ""
        if diff is None:
            lines.append("differs: not trained")
        elif self.reproduced:
            lines.append(f"reproduced{within}" if diff else "reproduced")
        else:
            shown = f"{diff:+.2f}" if abs(diff) >= 0.01 else f"{diff:+.1e}"
            lines.append(f"differs by {shown} pts" + (f" (tolerance {self.tolerance:g})" if self.tolerance > 0 else ""))
        return "\n".join(lines)


def rerun_trial(run_id: str, trial_id: str, runs: str = "runs", leaderboard: str | None = None,
                model: str | None = None, tolerance: float | None = None) -> TrialRerun:
    """Train trial ``trial_id`` of run ``run_id`` again and compare it with its row.

    Args:
        run_id, trial_id, runs, leaderboard, model: As :func:`find_trial` takes them.
        tolerance: Points of validation accuracy the rerun may differ by (default: 0 for a
            trial trained on the CPU, :data:`GPU_TOLERANCE` for one trained on a GPU).

    Raises:
        UsageError: as :func:`find_trial`; a negative tolerance; a GPU trial on a machine
            without a CUDA GPU and no tolerance given.
    """
    if tolerance is not None and not tolerance >= 0:
        raise UsageError(f"--tolerance must be 0 or more, got {tolerance:g}")
    spec, row = find_trial(run_id, trial_id, runs, leaderboard, model)
    if is_gpu_row(row):
        if tolerance is None and not torch.cuda.is_available():
            raise UsageError(f"trial {trial_id!r} trained on GPU {row['hardware']!r} and this machine has no CUDA GPU: "
                             "a CPU rerun cannot match it exactly (pass --tolerance PTS to compare within PTS points)")
        tolerance = GPU_TOLERANCE if tolerance is None else tolerance
    # The folders of this machine: search.json names where the search's were.
    spec = dataclasses.replace(spec, run_root=str(runs), leaderboard=str(leaderboard or spec.leaderboard))
    prepared = prepare_search(spec, run_id=run_id, run_dir=Path(runs) / run_id, echo=lambda _: None,
                              for_search=False)
    now = retrain_trial(prepared.inputs, json.loads(row["params_json"]), int(row["epochs"]))
    return TrialRerun(row, now, tolerance or 0.0, prepared.teacher_source)
