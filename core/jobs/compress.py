"""The ``compress`` job: one student through every stage of the design notes.

Stages: teacher (checkpoint, cache, or trained once), kernel-size changes and pruning,
distillation, fine-tuning, then measurement of teacher and student on the test split. With
``start_from`` (``--from``) a saved student takes the place of the first two: it is trained
further, its plan unchanged.
Everything the user named is resolved and checked before any training or writing.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunetune.components.data import DataSplits
from prunetune.components.models import ModelSpec
from prunetune.components.selection import group_ratios
from prunetune.errors import TrainingDiverged, UsageError
from prunetune.host.manager import Host
from prunetune.jobs.setup import set_up_job
from prunetune.jobs.spec import CompressSpec
from prunetune.results.checkpoint import load_student, save_student
from prunetune.structure.groups import find_groups
from prunetune.structure.kernels import apply_kernels
from prunetune.structure.measure import Measurement, measure
from prunetune.structure.plan import StudentPlan
from prunetune.student.surgery import build_student, check_output_shape
from prunetune.training.devices import select_device
from prunetune.training.loop import count_non_finite, evaluate
from prunetune.training.recipe import TrainRecipe
from prunetune.training.train import distill, make_retrainer, train_supervised

__all__ = ["CompressResult", "check_plan", "run_compress"]


@dataclasses.dataclass
class CompressResult:
    """What one compress run produced."""

    teacher: Measurement
    student: Measurement
    student_val_accuracy: float
    teacher_source: str
    history: list[dict[str, Any]]
    meta: dict[str, Any]
    model: nn.Module


def _check_output(out: str | None) -> None:
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out!r} is a folder; give the student's file name, e.g. {str(path / 'student.pt')!r}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"--out {out!r} exists and is not writable")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"output folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"output folder {str(parent)!r} is not writable")


def check_plan(model: nn.Module, plan: StudentPlan, example_input: torch.Tensor) -> None:
    """Fail early, before any training, on a plan that does not fit ``model``.

    Raises:
        UsageError: a kernel change or a per-layer ratio names a layer the model cannot take it for.
    """
    probe = copy.deepcopy(model)
    apply_kernels(probe, plan.kernels)
    group_ratios(find_groups(probe, example_input), plan)


def _saved_student(registry: Any, path: str, model: ModelSpec) -> tuple[nn.Module, dict[str, Any]]:
    """The student of ``--from`` and its description, checked to be of this job's model and data."""
    student, saved = load_student(registry, path, model.module if model.is_live else model.model)
    theirs = {"model": saved["model"], "model_options": {k: str(v) for k, v in saved.get("model_options", {}).items()},
              "input_shape": list(saved["input_shape"]), "num_classes": saved["num_classes"]}
    ours = {**model.meta(), "model_options": {k: str(v) for k, v in model.options.items()}}
    differ = [f"{key} {theirs[key]} (this job: {ours[key]})" for key in theirs if theirs[key] != ours[key]]
    if differ:
        raise UsageError(f"--from {path}: that student was made for another model or data: {'; '.join(differ)}")
    return student, saved


def run_compress(
    spec: CompressSpec,
    host: Host | None = None,
    echo: Callable[[str], None] = print,
    data: DataSplits | None = None,
    teacher: nn.Module | None = None,
) -> CompressResult:
    """Run every stage for one student and (if ``spec.out``) write it.

    ``data`` and ``teacher`` are a Python caller's own, used instead of the dataset and model
    ``spec`` names (see :func:`prunetune.jobs.setup.set_up_job`).

    Raises:
        UsageError: any bad input, before anything is trained or written.
        TrainingDiverged: a stage's loss or the student's weights stopped being finite;
            nothing is written.
    """
    device = select_device(spec.device)
    _check_output(spec.out)
    setup, untrained = set_up_job(spec, host, data=data, teacher=teacher)
    registry, data = setup.registry, setup.data
    scorer, pruner, distiller = (setup.component(kind) for kind in ("scorer", "pruner", "distiller"))
    if spec.start_from is None:
        pruner.check(spec.plan)
        check_plan(untrained, spec.plan, data.train_x[:1])
        start = None
    else:
        start = _saved_student(registry, spec.start_from, setup.model)
    teacher, teacher_source = setup.obtain_teacher(device, echo)

    example = data.train_x[:1].to(device)
    calibration = setup.calibration(device, spec.calibration_batches)
    if start is None:
        retrain = make_retrainer(teacher, distiller, data.train_x, data.train_y, device,
                                 batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed)
        student, record = build_student(
            teacher, spec.plan, pruner, scorer, example, calibration, seed=spec.seed, retrain=retrain
        )
        check_output_shape(spec.pruner, teacher, student, example)
        built = {"plan": spec.plan.to_dict(), "scorer": spec.scorer, "pruner": spec.pruner,
                 "pruner_options": dict(spec.pruner_options), "record": record.to_dict()}
    else:
        student, saved = start
        built = {"plan": saved["plan"], "scorer": saved.get("scorer"), "pruner": saved["pruner"],
                 "pruner_options": saved.get("pruner_options", {}), "record": saved["record"],
                 "started_from": str(Path(str(spec.start_from)).resolve())}
    student.to(device)

    recipe = TrainRecipe(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed,
                         schedule=spec.schedule, nesterov=spec.nesterov)
    history = distill(
        student, teacher, distiller, data.train_x, data.train_y, recipe, device,
        val=(data.val_x, data.val_y), progress=spec.progress,
    ) if spec.epochs else []
    if spec.finetune_epochs:
        finetune = TrainRecipe(epochs=spec.finetune_epochs, batch_size=spec.batch_size,
                               lr=spec.lr * 0.1, seed=spec.seed + 1, schedule=spec.schedule, nesterov=spec.nesterov)
        train_supervised(student, data.train_x, data.train_y, finetune, device,
                         progress=spec.progress, desc="fine-tune")

    # The stages check as they train; this also covers a student no stage trained (0 epochs).
    bad, total = count_non_finite(student.state_dict().values())
    if bad:
        raise TrainingDiverged(f"the student's weights are not finite ({bad} of {total} tensors); nothing written")
    val_accuracy, _ = evaluate(student, data.val_x, data.val_y, device)
    teacher_acc, _ = evaluate(teacher, data.test_x, data.test_y, device)
    student_acc, _ = evaluate(student, data.test_x, data.test_y, device)
    teacher_m = measure(teacher, teacher_acc, data.input_shape)
    student_m = measure(student, student_acc, data.input_shape)

    meta = {
        **setup.model.meta(),
        "dataset": spec.dataset,
        "dataset_options": dict(spec.dataset_options),
        "seed": spec.seed,
        "val_fraction": spec.val_fraction,
        **built,
        "distiller": spec.distiller,
        "metrics": {"val_accuracy": val_accuracy, **student_m.to_dict()},
        "teacher_metrics": teacher_m.to_dict(),
    }
    if spec.out is not None:
        save_student(spec.out, student, meta)
    return CompressResult(teacher_m, student_m, val_accuracy, teacher_source, history, meta, student)
