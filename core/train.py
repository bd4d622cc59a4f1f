"""The training stages: teacher training, distillation of a student, and fine-tuning.

Every stage runs the same small loop (:func:`_fit`) with its own per-step loss; the loop is
device-agnostic: models are moved to the given device and data batches follow them. A loss,
weights or validation loss that stop being finite end the stage with
:class:`~prunetune.errors.TrainingDiverged` within the epoch it happened in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from prunetune.distillation import DistillBatch, Distiller, capture_outputs
from prunetune.errors import TrainingDiverged

__all__ = [
    "EpochCallback",
    "TrainRecipe",
    "brief_distill",
    "count_non_finite",
    "distill",
    "evaluate",
    "make_retrainer",
    "teacher_logits_for",
    "train_supervised",
]

#: Called after every epoch with the epoch number (from 1) and its metrics.
EpochCallback = Callable[[int, dict[str, Any]], None]

#: One step: ``(inputs, targets, sample indices) -> (loss, student logits)``.
_Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("cosine", "onecycle", "constant")


@dataclasses.dataclass(frozen=True)
class TrainRecipe:
    """How to train one stage.

    Attributes:
        epochs: Passes over the training data (0: no training).
        batch_size: Samples per step.
        lr: Peak learning rate.
        momentum: SGD momentum (ignored by Adam).
        nesterov: Nesterov momentum (SGD with ``momentum > 0`` only).
        weight_decay: L2 penalty.
        optimizer: ``"sgd"`` or ``"adam"``.
        schedule: ``"cosine"`` (decay to 0 over all steps), ``"onecycle"`` (torch's
            ``OneCycleLR``: warm up to ``lr``, then anneal to near 0 over all steps) or
            ``"constant"``.
        seed: Seeds shuffling and any randomness inside the stage (adapter init, dropout).
        label_smoothing: Of the cross-entropy in :func:`train_supervised`; distillers own their
            loss.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    schedule: str = "cosine"
    seed: int = 0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be finite and > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (
                self.optimizer in _OPTIMIZERS,
                f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got {self.optimizer!r}",
            ),
            (
                self.schedule in _SCHEDULES,
                f"schedule must be one of {', '.join(_SCHEDULES)}, got {self.schedule!r}",
            ),
            (
                not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0),
                f"nesterov needs optimizer sgd with momentum > 0, got {self.optimizer}"
                f" with momentum {self.momentum}",
            ),
            (
                0 <= self.label_smoothing < 1,
                f"label_smoothing must be in [0, 1), got {self.label_smoothing}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# -- measuring -----------------------------------------------------------------------------


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int = 512
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``(x, y)``.

    Runs in eval mode without gradients; the model's training flags are restored.

    Returns:
        ``(accuracy in percent, mean cross-entropy loss)``; ``(nan, nan)`` for no samples.
    """
    if len(x) == 0:
        return math.nan, math.nan
    correct, total_loss = 0, 0.0
    with _eval_mode(model):
        for part in _batches(len(x), batch_size):
            xb, yb = x[part].to(device), y[part].to(device)
            logits = model(xb)
            total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == yb).sum().item())
    return 100.0 * correct / len(x), total_loss / len(x)


@torch.no_grad()
def teacher_logits_for(
    teacher: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """The teacher's logits for every sample of ``x``, in order, as float32 on the CPU.

    Pass them to :func:`distill` as ``teacher_logits`` to skip the teacher's forward pass in
    every epoch (only for distillers that need no teacher features).
    """
    with _eval_mode(teacher):
        parts = [teacher(x[part].to(device)).float().cpu() for part in _batches(len(x), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0)


# -- the loop ------------------------------------------------------------------------------


def _make_optimizer(
    params: Sequence[nn.Parameter], recipe: TrainRecipe, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    if recipe.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov,
        )
    else:
        opt = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "cosine":
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(total_steps, 1)
        )
    elif recipe.schedule == "onecycle":
        # Momentum stays the recipe's: by default OneCycleLR would cycle it (and Adam's betas).
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, total_steps=max(total_steps, 1), cycle_momentum=False
        )
    else:
        sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    return opt, sched


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    # Seed inside a forked RNG state so a stage is reproducible without reseeding the caller.
    devices: list[int] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# -- divergence ----------------------------------------------------------------------------


def _name(value: float) -> str:
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def count_non_finite(tensors: Iterable[torch.Tensor]) -> tuple[int, int]:
    """``(how many, of how many)`` floating-point tensors hold a NaN or an infinity.

    Reads each device once, however many tensors there are.
    """
    flags: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        if t.is_floating_point():
            flags.setdefault(t.device, []).append(t.detach().isfinite().all())
    bad = sum(int((~torch.stack(f)).sum()) for f in flags.values())
    return bad, sum(len(f) for f in flags.values())


def _check_weights(modules: Sequence[nn.Module], when: str, flag: str) -> None:
    # Buffers too: a BatchNorm's running statistics turn NaN with the activations.
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    bad, total = count_non_finite(tensors)
    if bad:
        raise TrainingDiverged(f"weights became non-finite {when} ({bad} of {total} tensors; lower {flag}?)")


class _LossWatch:
    """Finds the first optimizer step whose loss is not finite.

    On a CPU every step is checked at once (reading a CPU scalar costs nothing). Elsewhere the
    first bad step and its loss stay on the device, so the GPU never waits on the host per
    step, and :meth:`check` reads them once, with the epoch's sums.
    """

    def __init__(self, device: torch.device) -> None:
        self.eager = device.type == "cpu"
        self.steps = 0  # optimizer steps so far, across epochs
        self._first = torch.zeros((), dtype=torch.long, device=device)  # 0: none yet
        self._value = torch.zeros((), device=device)

    def observe(self, loss: torch.Tensor, where: str) -> None:
        """Count one step with ``loss``; ``where`` ends the message (``epoch 2 of distill; ...``)."""
        self.steps += 1
        loss = loss.detach().float()
        if self.eager:
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss became {_name(value)} at step {self.steps} ({where})")
            return
        bad = ~torch.isfinite(loss) & (self._first == 0)
        self._first.masked_fill_(bad, self.steps)
        self._value = torch.where(bad, loss, self._value)

    def check(self, where: str) -> None:
        """Raise for a bad step :meth:`observe` kept on the device."""
        first = int(self._first.item())
        if first:
            raise TrainingDiverged(f"loss became {_name(self._value.item())} at step {first} ({where})")


def _lr_flag(desc: str) -> str:
    # The teacher is trained with --teacher-lr; every other stage with --lr (fine-tuning at a tenth).
    return "--teacher-lr" if desc == "teacher" else "--lr"


def _train_epoch(
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    device: torch.device,
    step: _Step,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    bar: tqdm,
    watch: _LossWatch,
    where: str,
) -> tuple[float, float]:
    """One pass in ``order``: ``(mean loss, accuracy in percent)``.

    Raises:
        TrainingDiverged: a step's loss was not finite (on a GPU, found at the epoch's end).
    """
    # Summed on the device and read once per epoch, so a GPU never waits on the host per step.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for part in _batches(len(x), batch_size):
        idx = order[part]
        xb, yb = x[idx.to(x.device)].to(device), y[idx.to(y.device)].to(device)
        loss, logits = step(xb, yb, idx)
        watch.observe(loss, where)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(dim=1) == yb).sum()
        bar.update(1)
    watch.check(where)
    return loss_sum.item() / len(x), 100.0 * correct.item() / len(x)


def _fit(
    model: nn.Module,
    extra: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainRecipe,
    device: torch.device,
    step: _Step,
    *,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    progress: bool,
    desc: str,
    on_epoch: EpochCallback | None,
) -> list[dict[str, Any]]:
    """Train ``model`` (and ``extra``'s parameters) for ``recipe.epochs`` with ``step``'s loss.

    Raises:
        TrainingDiverged: a non-finite loss, weights or validation loss, before the epoch's
            metrics are reported.
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)} labels")
    if len(x) == 0 and recipe.epochs > 0:
        raise ValueError("no training samples")
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    params = [p for p in [*model.parameters(), *extra.parameters()] if p.requires_grad]
    opt, sched = _make_optimizer(params, recipe, recipe.epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(recipe.seed)
    history: list[dict[str, Any]] = []
    total = recipe.epochs * steps_per_epoch
    watch = _LossWatch(device)
    flag = _lr_flag(desc)
    # Bars only on a terminal: redraws in a log file make it megabytes of noise.
    with tqdm(total=total, desc=desc, file=sys.stderr, disable=not (progress and sys.stderr.isatty())) as bar:
        for epoch in range(1, recipe.epochs + 1):
            started = time.perf_counter()
            model.train()
            extra.train()
            order = torch.randperm(len(x), generator=shuffle)
            where = f"epoch {epoch} of {desc}; lower {flag}?"
            loss, accuracy = _train_epoch(
                x, y, order, recipe.batch_size, device, step, opt, sched, bar, watch, where
            )
            _check_weights([model, extra], f"after epoch {epoch} of {desc}", flag)
            metrics: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": loss,
                "train_accuracy": accuracy,
                "lr": opt.param_groups[0]["lr"],
            }
            if val is not None:
                metrics["val_accuracy"], metrics["val_loss"] = evaluate(model, *val, device)
                if len(val[0]) and not math.isfinite(metrics["val_loss"]):
                    raise TrainingDiverged(
                        f"validation loss became {_name(metrics['val_loss'])} after epoch {epoch}"
                        f" of {desc} (lower {flag}?)"
                    )
            metrics["seconds"] = time.perf_counter() - started
            bar.set_postfix(
                {k: f"{v:.3g}" for k, v in metrics.items() if k in ("train_loss", "val_accuracy")}
            )
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
    return history


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

    with _seeded(recipe.seed, device):
        return _fit(
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
) -> _Step:
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
    with _frozen(teacher), _seeded(recipe.seed, device):
        extra = distiller.bind(student, teacher, x[:1].to(device)).to(device)
        step = _distill_step(student, teacher, distiller, teacher_logits)
        return _fit(
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
    with _frozen(teacher), _seeded(seed, device):
        extra = distiller.bind(student, teacher, x[:1].to(device)).to(device)
        step = _distill_step(student, teacher, distiller, teacher_logits)
        params = [p for p in [*student.parameters(), *extra.parameters()] if p.requires_grad]
        opt, _ = _make_optimizer(params, recipe, steps)
        student.train()
        extra.train()
        picker = torch.Generator().manual_seed(seed)
        loss_sum = torch.zeros((), device=device)
        watch = _LossWatch(device)
        where = "retraining between pruning steps; lower --lr?"
        for _ in range(steps):
            idx = torch.randperm(len(x), generator=picker)[: recipe.batch_size]
            xb, yb = x[idx.to(x.device)].to(device), y[idx.to(y.device)].to(device)
            loss, _ = step(xb, yb, idx)
            watch.observe(loss, where)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
        watch.check(where)
        _check_weights([student, extra], "while retraining between pruning steps", "--lr")
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
    """``retrain(student, steps)`` for :attr:`prunetune.pruning.PruneJob.retrain`.

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
