"""Torch-Pruning's own pruning and fine-tuning recipe, methods a-c of :mod:`benchmarks.quality`."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

__all__ = ["TPRecipe", "classifier_layers", "kd_loss", "logits_of", "tp_prune", "tp_student", "tp_train"]


@dataclasses.dataclass(frozen=True)
class TPRecipe:
    """The baselines' fine-tuning recipe, and the KD baseline's loss.

    ``onecycle``: SGD, Nesterov, one cycle, as the issue names Torch-Pruning's documented
    fine-tuning; ``step``: ``reproduce/main.py``'s multi-step decay (its lr is 0.01).
    """

    schedule: str = "onecycle"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    milestones: tuple[float, ...] = (0.6, 0.8)  # of all steps, as 60,80 of TP's 100 epochs
    gamma: float = 0.1
    alpha: float = 0.5
    T: float = 4.0


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The output layers, found as Torch-Pruning's ``reproduce/main.py`` finds them."""
    return [m for m in model.modules()
            if (isinstance(m, nn.Linear) and m.out_features == num_classes)
            or (isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == num_classes)]


def tp_prune(teacher: nn.Module, ratio: float, example: torch.Tensor, num_classes: int) -> nn.Module:
    """A copy of ``teacher`` pruned by Torch-Pruning at one ``ratio`` for every group."""
    student = copy.deepcopy(teacher).eval()
    for param in student.parameters():
        param.requires_grad_(True)
    pruner = tp.pruner.MetaPruner(
        student, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=classifier_layers(student, num_classes), global_pruning=False, round_to=None,
    )
    pruner.step()
    return student


def tp_student(teacher: nn.Module, budget_macs: int, example: torch.Tensor, num_classes: int,
               steps: int = 12, top: float = 0.9) -> tuple[nn.Module, float]:
    """The largest Torch-Pruning student within ``budget_macs``, its ratio found by bisection.

    Raises:
        RuntimeError: not even ``top`` meets the budget.
    """

    def pruned(ratio: float) -> tuple[int, nn.Module]:
        student = tp_prune(teacher, ratio, example, num_classes)
        return int(tp.utils.count_ops_and_params(student, example)[0]), student

    macs, student = pruned(top)
    if macs > budget_macs:
        raise RuntimeError(f"Torch-Pruning cannot meet {budget_macs} MACs: ratio {top} keeps {macs}")
    best = (macs, top, student)
    lo, hi = 0.0, top
    for _ in range(steps):
        ratio = (lo + hi) / 2
        macs, student = pruned(ratio)
        if macs <= budget_macs:
            hi = ratio
            if macs > best[0]:
                best = (macs, ratio, student)
        else:
            lo = ratio
    return best[2], best[1]


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, alpha: float, T: float) -> torch.Tensor:
    """Hinton et al.: ``(1 - alpha) * CE + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``."""
    soft = F.kl_div(F.log_softmax(student / T, dim=1), F.softmax(teacher / T, dim=1), reduction="batchmean")
    return (1 - alpha) * F.cross_entropy(student, y) + alpha * T * T * soft


def tp_train(student: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: TPRecipe, steps: int, seed: int,
             teacher_logits: torch.Tensor | None = None) -> None:
    """The baselines' recipe for ``steps`` steps: cross-entropy, or KD with ``teacher_logits``."""
    per_epoch = len(x) // recipe.batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(x)} training images are fewer than one batch of {recipe.batch_size}")
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    onecycle = recipe.schedule == "onecycle"
    opt = torch.optim.SGD(student.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, nesterov=onecycle)
    if onecycle:
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=max(steps, 1),
                                                         cycle_momentum=False)
    else:
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(m * steps) for m in recipe.milestones], recipe.gamma)
    student.train()
    done = 0
    while done < steps:
        order = torch.randperm(len(x), generator=shuffle)
        for i in range(min(per_epoch, steps - done)):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            out = student(x[idx])
            if teacher_logits is None:
                loss = F.cross_entropy(out, y[idx])
            else:
                loss = kd_loss(out, teacher_logits[idx], y[idx], recipe.alpha, recipe.T)
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss became {loss.item()} at step {done}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
    student.eval()
