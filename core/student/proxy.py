"""A training-free proxy of how well a pruned candidate ends: adaptive BatchNorm (EagleEye).

A student pruned from the teacher keeps the teacher's BatchNorm running statistics, which no
longer describe its thinner layers, so its accuracy straight after pruning says little about
the accuracy it reaches once trained. Recomputing those statistics on a few training batches
(forward passes in train mode, no gradients, a cumulative average) and then measuring accuracy
on held-out data ranks candidates much as their trained accuracies do (Li et al., "EagleEye:
Fast Sub-net Evaluation for Efficient Neural Network Pruning", ECCV 2020). One candidate costs
a pruning and a few forward passes, so hundreds are screened in the time of one trial.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunetune.components.pruning import Pruner
from prunetune.components.scoring import Scorer, calibration_batches
from prunetune.components.spaces import DefineByRun, ModelStructure, SearchSpace
from prunetune.structure.plan import MAX_RATIO, StudentPlan
from prunetune.student.budget import CostLimit, MacsCounter, repair
from prunetune.student.surgery import build_student
from prunetune.training.loop import evaluate

__all__ = ["ProxyData", "Screened", "proxy_accuracy", "recalibrate_bn", "screen"]

_CPU = torch.device("cpu")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace the running statistics of ``model``'s BatchNorm layers by those of ``batches``.

    The statistics are reset, then every batch is passed forward with the BatchNorm layers in
    train mode and ``momentum=None`` (a cumulative average, so every batch counts alike). Only
    the BatchNorm layers are switched to train mode: dropout and the like stay as they are in
    eval mode and do not disturb the statistics. Weights are unchanged; every module's mode and
    momentum are restored.

    Args:
        model: Changed in place.
        batches: Input batches on the model's device.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        for x in batches:
            model(x)
    finally:
        for module, mode in modes.items():
            module.training = mode
        for norm, momentum in momenta.items():
            norm.momentum = momentum


def proxy_accuracy(
    student: nn.Module,
    calibration_batches: Iterable[torch.Tensor],
    held_out_x: torch.Tensor,
    held_out_y: torch.Tensor,
    device: torch.device,
) -> float:
    """Top-1 accuracy (percent) of ``student`` on held-out data after :func:`recalibrate_bn`
    on ``calibration_batches`` (training inputs); ``student`` is moved to ``device`` and
    recalibrated in place."""
    student.to(device)
    recalibrate_bn(student, (x.to(device) for x in calibration_batches))
    accuracy, _ = evaluate(student, held_out_x, held_out_y, device)
    return accuracy


@dataclasses.dataclass(frozen=True)
class ProxyData:
    """What the proxy reads, all on the CPU.

    Attributes:
        calibration: The scorer's labelled batches, as a trial gives them (the first batches
            of the training split), so a candidate is cut as its trial would cut it.
        bn_batches: Training inputs for :func:`recalibrate_bn`, the same for every candidate.
        held_out_x: Inputs the accuracy is measured on, never trained on by trials.
        held_out_y: Their labels.
    """

    calibration: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    bn_batches: tuple[torch.Tensor, ...]
    held_out_x: torch.Tensor
    held_out_y: torch.Tensor

    @classmethod
    def of(
        cls,
        train: tuple[torch.Tensor, torch.Tensor],
        held_out: tuple[torch.Tensor, torch.Tensor],
        seed: int,
        scorer_batches: int = 4,
        bn_batches: int = 8,
        batch_size: int = 64,
        held_out_limit: int | None = 2048,
    ) -> ProxyData:
        """Batches from ``train`` and the first ``held_out_limit`` items of ``held_out``.

        The scorer gets the first ``scorer_batches`` batches of ``train`` (as trials do);
        :func:`recalibrate_bn` gets ``bn_batches`` batches drawn at random (seeded) from it.
        """
        x, y = train[0].cpu(), train[1].cpu()
        calibration = tuple(calibration_batches(x, y, scorer_batches, size=batch_size))
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: batch_size * bn_batches]
        norm_batches = tuple(x[order[i : i + batch_size]] for i in range(0, len(order), batch_size))
        hx, hy = held_out[0].cpu(), held_out[1].cpu()
        if held_out_limit is not None:
            hx, hy = hx[:held_out_limit], hy[:held_out_limit]
        return cls(calibration, norm_batches, hx, hy)


@dataclasses.dataclass(frozen=True)
class Screened:
    """One screened candidate.

    Attributes:
        params: The parameters the space suggested (a searcher's point; the trial repairs them
            to ``plan`` again).
        plan: The plan after repair to the budget: the student that was scored.
        macs: Its student's MACs.
        proxy_accuracy: Held-out accuracy (percent) after BatchNorm recalibration, untrained.
    """

    params: Mapping[str, Any]
    plan: StudentPlan
    macs: int
    proxy_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {"params": dict(self.params), "plan": self.plan.to_dict(), "macs": self.macs,
                "proxy_accuracy": self.proxy_accuracy}


def _sample(define: DefineByRun, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` parameter sets from the space's define-by-run function, sampled at random."""
    import optuna  # only when screening

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    points = []
    for _ in range(count):
        trial = study.ask()
        define(trial)
        points.append(dict(trial.params))
    return points


def screen(
    teacher: nn.Module,
    space: SearchSpace,
    structure: ModelStructure,
    scorer: Scorer,
    pruner: Pruner,
    data: ProxyData,
    count: int,
    seed: int,
    *,
    budget_macs: int | None = None,
    max_ratio: float = MAX_RATIO,
    round_to: int | None = None,
    scorer_named: Callable[[str], Scorer] | None = None,
    device: torch.device = _CPU,
    limits: Sequence[CostLimit] = (),
    counter: MacsCounter | None = None,
) -> list[Screened]:
    """Sample ``count`` candidates of ``space`` at random, score each with the proxy, best first.

    Each candidate's plan is repaired to ``budget_macs`` as its trial would repair it (those that
    cannot fit are skipped), its student built from the teacher with ``pruner`` and ``scorer``
    (no retraining, not even for pruners that retrain between steps), its BatchNorm statistics
    recalibrated on ``data.bn_batches`` and its accuracy measured on the held-out data. Equal
    scores keep the order sampled; the same ``seed`` gives the same list.

    Args:
        teacher: Left untouched (students are built from a CPU copy when it is elsewhere).
        space: The search space, sampled through its define-by-run function.
        structure: The teacher's structure, as the searcher sees it.
        scorer: The run's scorer.
        pruner: The run's pruner.
        data: Training batches and the held-out slice.
        count: How many candidates to sample.
        seed: Seeds the sampler and the students' pruning.
        budget_macs: Most MACs per input a student may cost (None: no repair).
        max_ratio: The repair's ``max_ratio``.
        round_to: The plans' ``round_to``.
        scorer_named: Makes the scorer a candidate chooses (a space that searches scorers);
            None: every candidate uses ``scorer``.
        device: Where students are recalibrated and measured.
        limits: Further budgets (a latency cap) the repair meets, as a trial's does; only
            with ``budget_macs``.
        counter: The teacher's :class:`MacsCounter`, when the caller has one (the limits'
            own, say); else one is made.

    Raises:
        UsageError: a sampled plan names a layer that is not in the teacher.
    """
    base = teacher if all(p.device.type == "cpu" for p in teacher.parameters()) else copy.deepcopy(teacher).cpu()
    example = data.calibration[0][0][:1] if data.calibration else data.bn_batches[0][:1]
    counter = counter or MacsCounter(base, example)
    scorers: dict[str, Scorer] = {}
    results = []
    bound = DefineByRun(space, structure)
    for params in _sample(bound, count, seed):
        candidate = bound.candidate(params, round_to)
        if budget_macs is None:
            plan, macs = candidate.plan, counter.macs(candidate.plan)
        else:
            fix = repair(base, candidate.plan, budget_macs, example, max_ratio, counter=counter, limits=limits)
            if not fix.feasible:
                continue
            plan, macs = fix.plan, fix.macs
        chosen = scorer
        if candidate.scorer is not None and scorer_named is not None:
            if candidate.scorer not in scorers:
                scorers[candidate.scorer] = scorer_named(candidate.scorer)
            chosen = scorers[candidate.scorer]
        student, _ = build_student(base, plan, pruner, chosen, example, data.calibration, seed=seed)
        accuracy = proxy_accuracy(student, data.bn_batches, data.held_out_x, data.held_out_y, device)
        results.append(Screened(params, plan, macs, accuracy))
    return sorted(results, key=lambda r: -r.proxy_accuracy)
