"""The ``distributed`` pruner: score stages of the model in parallel Ray tasks, cut in the driver.

Design notes 4.1.3 (distributed parameterized pruning): the model is split into ``workers``
sub-networks, each is scored on its own worker (a GPU where the cluster has them), and the
scores are gathered into one plan for the whole model. Here a sub-network is a run of
consecutive channel groups in module order (a stage), the runs holding about equal shares of
the parameters. The plan is chosen in the driver exactly as the ``channel`` pruner chooses it
(local ratios, or global ranking under a MACs target), so the result is the same; only where
the scoring runs differs.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from prunetune import hookimpl
from prunetune.components.cluster import ensure_ray, loopback_ray
from prunetune.components.pruning import PruneJob, Pruner, PruneRecord, recorded_groups
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.components.selection import select_channels
from prunetune.host.registry import Registry
from prunetune.structure.groups import ChannelGroup, find_groups

__all__ = [
    "DistributedPruner",
    "group_cost",
    "partition",
    "prunetune_add_components",
    "score_share",
    "shares",
]

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


def group_cost(group: ChannelGroup) -> int:
    """The parameters a group's channels own: its producers' and normalisations' weights and biases."""
    modules = {id(m.module): m.module for m in group.producers + group.norms}
    return sum(p.numel() for module in modules.values() for p in module.parameters(recurse=False))


def partition(costs: Sequence[float], n: int) -> list[range]:
    """Split ``range(len(costs))`` into at most ``n`` non-empty contiguous runs of about equal cost.

    Run ``j`` ends where the running total comes nearest to ``j / n`` of the whole, with at
    least one item per run; all-zero costs are split by count.
    """
    count = len(costs)
    n = max(1, min(n, count))
    if count == 0:
        return []
    if sum(costs) <= 0:
        costs = [1.0] * count
    cumulative = [0.0]
    for cost in costs:
        cumulative.append(cumulative[-1] + cost)
    bounds = [0]
    for j in range(1, n):
        target = cumulative[-1] * j / n
        candidates = range(bounds[-1] + 1, count - (n - j) + 1)
        bounds.append(min(candidates, key=lambda i: abs(cumulative[i] - target)))
    bounds.append(count)
    return [range(start, end) for start, end in zip(bounds, bounds[1:])]


def shares(groups: Sequence[ChannelGroup], workers: int) -> list[list[ChannelGroup]]:
    """``groups`` (in module order) cut into at most ``workers`` stages of about equal parameters."""
    return [[groups[i] for i in run] for run in partition([group_cost(g) for g in groups], workers)]


def score_share(
    model: nn.Module,
    example_input: torch.Tensor,
    calibration: Batches,
    scorer: Scorer,
    names: Sequence[str],
    seed: int,
) -> dict[str, torch.Tensor]:
    """Scores of the groups ``names`` of ``model``, on the CPU (the body of one Ray task).

    Runs on the process's GPU when it has one. ``model`` is the task's own copy: its groups are
    found again on it, and only those named are scored.

    Raises:
        ValueError: a name is not a group of ``model``.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    example = example_input.to(device)
    batches = [(x.to(device), y.to(device)) for x, y in calibration]
    by_name = {group.name: group for group in find_groups(model, example)}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"the model copy has no group {', '.join(missing)}")
    scores = scorer.score_groups([by_name[name] for name in names], ScoreContext(model, example, batches, seed))
    return {name: value.detach().cpu() for name, value in scores.items()}


class DistributedPruner(Pruner):
    """Score consecutive stages of the model in parallel Ray tasks, then cut like ``channel``."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``distributed`` pruner.

        Attributes:
            workers: Sub-networks, each scored by its own Ray task.
            address: The Ray cluster to connect to when Ray is not running in this process
                yet (None: an embedded local Ray on 127.0.0.1).
        """

        workers: int = 2
        address: str | None = None

        def __post_init__(self) -> None:
            if self.workers < 1:
                raise ValueError(f"workers must be at least 1 (got {self.workers})")

    def __init__(self, config: Config) -> None:
        self.config = config

    def prune(self, job: PruneJob) -> PruneRecord:
        used = 0

        def score_remotely(groups: Sequence[ChannelGroup]) -> dict[str, torch.Tensor]:
            nonlocal used
            stages = shares(groups, self.config.workers)
            used = len(stages)
            return self.score_stages(job, stages)

        groups, removals = select_channels(job, score_groups=score_remotely)
        by_name = {group.name: group for group in groups}
        for name, channels in removals.items():
            by_name[name].remove(channels)
        return PruneRecord(removed=removals, physical=True, extra={"workers": used})

    def score_stages(self, job: PruneJob, stages: Sequence[Sequence[ChannelGroup]]) -> dict[str, torch.Tensor]:
        """Scores of every group of ``stages`` (groups of ``job.model``), one Ray task per stage.

        Connects to Ray first when this process has not (``address``, else an embedded local
        Ray). Each task takes a GPU where the cluster has one, else a CPU.
        """
        if self.config.address is None:
            loopback_ray()  # an embedded Ray need not be reached from outside this machine
        import ray

        ensure_ray(self.config.address)
        resources = {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) > 0 else {"num_cpus": 1}
        task = ray.remote(score_share).options(**resources)
        model = job.model if _on_cpu(job.model) else copy.deepcopy(job.model).cpu()
        # Put once: every task reads the same copy from the object store.
        model_ref = ray.put(model)
        example_ref = ray.put(job.ctx.example_input.detach().cpu())
        batches_ref = ray.put([(x.detach().cpu(), y.detach().cpu()) for x, y in job.ctx.calibration])
        refs = [
            task.remote(model_ref, example_ref, batches_ref, job.scorer, [g.name for g in stage], job.ctx.seed)
            for stage in stages
        ]
        device = job.ctx.example_input.device
        return {name: value.to(device) for part in ray.get(refs) for name, value in part.items()}

    def replay(self, model: nn.Module, record: PruneRecord, example_input: torch.Tensor) -> None:
        for group, channels in recorded_groups(model, record, example_input):
            group.remove(channels)


def _on_cpu(model: nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in (*model.parameters(), *model.buffers()))


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_pruner("distributed", DistributedPruner)
