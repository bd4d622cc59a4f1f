"""The loop every training stage runs (:func:`fit`), evaluation, and the divergence checks.

The loop is device-agnostic: models are moved to the given device and data batches follow
them. A loss, weights or validation loss that stop being finite end the stage with
:class:`~prunetune.errors.TrainingDiverged` within the epoch it happened in."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from prunetune.errors import TrainingDiverged
from prunetune.training.recipe import TrainRecipe

__all__ = [
    "EpochCallback", "LossWatch", "Step", "batches", "check_weights", "count_non_finite", "eval_mode",
    "evaluate", "fit", "make_optimizer", "optimizer_step", "seeded", "teacher_logits_for",
]

#: Called after every epoch with the epoch number (from 1) and its metrics.
EpochCallback = Callable[[int, dict[str, Any]], None]

#: One step: ``(inputs, targets, sample indices) -> (loss, student logits)``.
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# -- measuring -----------------------------------------------------------------------------


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
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
    with eval_mode(model):
        for part in batches(len(x), batch_size):
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
    with eval_mode(teacher):
        parts = [teacher(x[part].to(device)).float().cpu() for part in batches(len(x), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0)


def make_optimizer(
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
def seeded(seed: int, device: torch.device) -> Iterator[None]:
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


def check_weights(modules: Sequence[nn.Module], when: str, flag: str) -> None:
    # Buffers too: a BatchNorm's running statistics turn NaN with the activations.
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    bad, total = count_non_finite(tensors)
    if bad:
        raise TrainingDiverged(f"weights became non-finite {when} ({bad} of {total} tensors; lower {flag}?)")


class LossWatch:
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


def optimizer_step(
    step: Step, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
    device: torch.device, watch: LossWatch, where: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on samples ``idx`` of ``x`` and ``y``: ``(loss, logits, labels)``, the
    loss watched for non-finite values (see :class:`LossWatch`)."""
    xb, yb = x[idx.to(x.device)].to(device), y[idx.to(y.device)].to(device)
    loss, logits = step(xb, yb, idx)
    watch.observe(loss, where)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, logits, yb


def _train_epoch(
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    device: torch.device,
    step: Step,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    bar: tqdm,
    watch: LossWatch,
    where: str,
) -> tuple[float, float]:
    """One pass in ``order``: ``(mean loss, accuracy in percent)``.

    Raises:
        TrainingDiverged: a step's loss was not finite (on a GPU, found at the epoch's end).
    """
    # Summed on the device and read once per epoch, so a GPU never waits on the host per step.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for part in batches(len(x), batch_size):
        idx = order[part]
        loss, logits, yb = optimizer_step(step, opt, x, y, idx, device, watch, where)
        sched.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(dim=1) == yb).sum()
        bar.update(1)
    watch.check(where)
    return loss_sum.item() / len(x), 100.0 * correct.item() / len(x)


def fit(
    model: nn.Module,
    extra: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    recipe: TrainRecipe,
    device: torch.device,
    step: Step,
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
    opt, sched = make_optimizer(params, recipe, recipe.epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(recipe.seed)
    history: list[dict[str, Any]] = []
    total = recipe.epochs * steps_per_epoch
    watch = LossWatch(device)
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
            check_weights([model, extra], f"after epoch {epoch} of {desc}", flag)
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
