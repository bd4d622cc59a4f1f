"""The training stages: teacher training, distillation of a student, and fine-tuning.

Every stage runs the same loop (:func:`prunetune.training.loop.fit`) with its own per-step loss."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunetune.components.distillation import DistillBatch, Distiller, capture_outputs
from prunetune.training.loop import (
    EpochCallback,
    LossWatch,
    Step,
    check_weights,
    fit,
    make_optimizer,
    optimizer_step,
    seeded,
)
from prunetune.training.recipe import TrainRecipe

__all__ = ["brief_distill", "distill", "make_retrainer", "train_supervised"]

# -- the stages ----------------------------------------------------------------------------


def train_supervised(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainRecipe,
    device: torch.device,
    progress: bool = True,
    desc: str = "teacher",
    *,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` on ``(x, y)`` with cross-entropy: teacher training and fine-tuning.

    Args:
        model: Moved to ``device`` in place and left in train mode.
        x: Inputs ``[N, C, H, W]`` on any device; batches are moved to ``device``.
        y: Labels ``[N]``.
        recipe: Epochs, optimizer, schedule, seed.
        device: Where to train.
        progress: Show a progress bar on stderr.
        desc: The progress bar's label.
        val: Validation ``(x, y)`` measured after every epoch.
        on_epoch: Called with ``(epoch, metrics)`` after every epoch.

    Returns:
        One dict per epoch: ``epoch``, ``train_loss``, ``train_accuracy``, ``lr``, ``seconds``,
        and with ``val`` also ``val_accuracy`` (percent) and ``val_loss``.
    """
    model.to(device)

    def step(
        xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(xb)
        return F.cross_entropy(logits, yb, label_smoothing=recipe.label_smoothing), logits

    with seeded(recipe.seed, device):
        return fit(
            model,
            nn.Module(),
            x,
            y,
            recipe,
            device,
            step,
            val=val,
            progress=progress,
            desc=desc,
            on_epoch=on_epoch,
        )


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    # The teacher stays in eval mode afterwards; only requires_grad flags are given back.
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _distill_step(
    student: nn.Module,
    teacher: nn.Module,
    distiller: Distiller,
    teacher_logits: torch.Tensor | None,
) -> Step:
    s_layers, t_layers = distiller.student_layers(), distiller.teacher_layers()
    run_teacher = distiller.uses_teacher and (teacher_logits is None or bool(t_layers))

    def step(
        xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t_logits: torch.Tensor | None = None
        t_feats: dict[str, torch.Tensor] = {}
        if run_teacher:
            with torch.no_grad(), capture_outputs(teacher, t_layers) as t_feats:
                t_logits = teacher(xb)
        elif distiller.uses_teacher and teacher_logits is not None:
            t_logits = teacher_logits[idx.to(teacher_logits.device)].to(xb.device)
        with capture_outputs(student, s_layers) as s_feats:
            s_logits = student(xb)
        batch = DistillBatch(s_logits, t_logits, yb, dict(s_feats), dict(t_feats))
        return distiller.loss(batch), s_logits

    return step


def distill(
    student: nn.Module,
    teacher: nn.Module,
    distiller: Distiller,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainRecipe,
    device: torch.device,
    *,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    teacher_logits: torch.Tensor | None = None,
    progress: bool = True,
    desc: str = "distill",
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, Any]]:
    """Train ``student`` with ``distiller``'s loss, taught by the frozen ``teacher``.

    The teacher is put in eval mode and its parameters get no gradients (their
    ``requires_grad`` flags are restored afterwards). ``distiller.bind`` is called once, and
    the module it returns is trained together with the student.

    Args:
        student: Moved to ``device`` in place and left in train mode.
        teacher: Moved to ``device`` in place and left in eval mode.
        distiller: The loss.
        x: Inputs ``[N, C, H, W]`` on any device; batches are moved to ``device``.
        y: Labels ``[N]``.
        recipe: Epochs, optimizer, schedule, seed.
        device: Where to train.
        val: Validation ``(x, y)`` measured after every epoch.
        teacher_logits: The teacher's logits on ``x``, same order (see
            :func:`teacher_logits_for`). Used instead of the teacher's forward pass when the
            distiller needs no teacher features.
        progress: Show a progress bar on stderr.
        desc: The progress bar's label.
        on_epoch: Called with ``(epoch, metrics)`` after every epoch (e.g. to report to Ray
            Tune).

    Returns:
        One dict per epoch, as :func:`train_supervised` returns.

    Raises:
        ValueError: ``teacher_logits`` does not have one row per sample of ``x``.
    """
    if teacher_logits is not None and len(teacher_logits) != len(x):
        raise ValueError(
            f"teacher_logits has {len(teacher_logits)} rows but x has {len(x)} samples"
        )
    student.to(device)
    teacher.to(device)
    with _frozen(teacher), seeded(recipe.seed, device):
        extra = distiller.bind(student, teacher, x[:1].to(device)).to(device)
        step = _distill_step(student, teacher, distiller, teacher_logits)
        return fit(
            student,
            extra,
            x,
            y,
            recipe,
            device,
            step,
            val=val,
            progress=progress,
            desc=desc,
            on_epoch=on_epoch,
        )


def brief_distill(
    student: nn.Module,
    teacher: nn.Module,
    distiller: Distiller,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    device: torch.device,
    *,
    batch_size: int = 64,
    lr: float = 0.01,
    seed: int = 0,
    teacher_logits: torch.Tensor | None = None,
) -> float:
    """A few SGD steps (momentum 0.9) of ``distiller``'s loss: retraining between pruning steps.

    Each step draws a seeded random batch of ``x``. As in :func:`distill`, the teacher is
    frozen, ``distiller.bind`` is called once (its module is trained with the student), the
    student is left in train mode and the caller's random state is untouched.

    Args:
        student: Moved to ``device`` in place and left in train mode.
        teacher: Moved to ``device`` in place and left in eval mode.
        distiller: The loss.
        x: Inputs ``[N, C, H, W]`` on any device.
        y: Labels ``[N]``.
        steps: Optimizer steps (0: nothing is trained).
        device: Where to train.
        batch_size: Samples per step (at most ``N``).
        lr: Constant learning rate.
        seed: Seeds the batches and any randomness inside the distiller.
        teacher_logits: The teacher's logits on ``x`` (see :func:`distill`).

    Returns:
        The mean loss over the steps (nan for no steps).

    Raises:
        ValueError: negative ``steps``, no samples, or ``x``, ``y`` and ``teacher_logits``
            of different lengths.
        TrainingDiverged: a step's loss, or the weights at the end, were not finite.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if steps == 0:
        return math.nan
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x has {len(x)} samples and y has {len(y)} labels; need as many, at least one")
    if teacher_logits is not None and len(teacher_logits) != len(x):
        raise ValueError(
            f"teacher_logits has {len(teacher_logits)} rows but x has {len(x)} samples"
        )
    recipe = TrainRecipe(
        epochs=1, batch_size=batch_size, lr=lr, weight_decay=0.0, schedule="constant", seed=seed
    )
    student.to(device)
    teacher.to(device)
    with _frozen(teacher), seeded(seed, device):
        extra = distiller.bind(student, teacher, x[:1].to(device)).to(device)
        step = _distill_step(student, teacher, distiller, teacher_logits)
        params = [p for p in [*student.parameters(), *extra.parameters()] if p.requires_grad]
        opt, _ = make_optimizer(params, recipe, steps)
        student.train()
        extra.train()
        picker = torch.Generator().manual_seed(seed)
        loss_sum = torch.zeros((), device=device)
        watch = LossWatch(device)
        where = "retraining between pruning steps; lower --lr?"
        for _ in range(steps):
            idx = torch.randperm(len(x), generator=picker)[: recipe.batch_size]
            loss, _, _ = optimizer_step(step, opt, x, y, idx, device, watch, where)
            loss_sum += loss.detach()
        watch.check(where)
        check_weights([student, extra], "while retraining between pruning steps", "--lr")
    return loss_sum.item() / steps


def make_retrainer(
    teacher: nn.Module,
    distiller: Distiller,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    *,
    batch_size: int = 64,
    lr: float = 0.01,
    seed: int = 0,
    teacher_logits: torch.Tensor | None = None,
) -> Callable[[nn.Module, int], None]:
    """``retrain(student, steps)`` for :attr:`prunetune.components.pruning.PruneJob.retrain`.

    Every call runs :func:`brief_distill` on the student as it is then (the distiller is bound
    again, since pruning changed the student's widths), with the seed advanced by one per call
    so that successive calls see different batches. ``device`` should be where the student
    already is: the pruner goes on working with its example input there.
    """
    calls = 0

    def retrain(student: nn.Module, steps: int) -> None:
        nonlocal calls
        brief_distill(
            student,
            teacher,
            distiller,
            x,
            y,
            steps,
            device,
            batch_size=batch_size,
            lr=lr,
            seed=seed + calls,
            teacher_logits=teacher_logits,
        )
        calls += 1

    return retrain
