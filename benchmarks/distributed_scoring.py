"""Issue-4 measurement: wall time of the ``distributed`` pruner's scoring with 1 and 2 workers.

Scores every group of a zoo ResNet with the ``taylor`` scorer on random calibration batches,
through :meth:`DistributedPruner.score_stages` (one Ray task per stage) on an embedded local
Ray with ``--cpus`` CPUs; each task runs torch on one thread. Every worker count is run once
untimed (Ray starts its worker processes), then ``--repeats`` times. Prints the median seconds
and the speed-up over one worker, and the machine. Usage:

    .venv/bin/python benchmarks/distributed_scoring.py [--width 32] [--depth 3] [--batches 8]
        [--batch-size 64] [--workers 1,2] [--repeats 3] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from prunetune.components.cluster import loopback_ray
from prunetune.components.pruning import PruneJob
from prunetune.components.scoring import ScoreContext
from prunetune.host.manager import Host
from prunetune.host.options import EmptyConfig
from prunetune.plugins.pruners.distributed import DistributedPruner, shares
from prunetune.plugins.scorers.taylor import TaylorScorer
from prunetune.structure.groups import find_groups
from prunetune.structure.plan import StudentPlan

_IMAGE = 28


def _job(width: int, depth: int, batches: int, batch_size: int) -> PruneJob:
    model = Host.create().registry.create("model", "resnet", {"width": width, "depth": depth}).build(1, 10, _IMAGE)
    generator = torch.Generator().manual_seed(0)
    calibration = [
        (torch.randn(batch_size, 1, _IMAGE, _IMAGE, generator=generator),
         torch.randint(0, 10, (batch_size,), generator=generator))
        for _ in range(batches)
    ]
    ctx = ScoreContext(model.eval(), torch.randn(1, 1, _IMAGE, _IMAGE), calibration)
    return PruneJob(model, StudentPlan(ratio=0.5), TaylorScorer(EmptyConfig()), ctx)


def _seconds(job: PruneJob, workers: int, repeats: int) -> float:
    pruner = DistributedPruner(DistributedPruner.Config(workers=workers))
    stages = shares(find_groups(job.model, job.ctx.example_input), workers)
    # One untimed batch first: Ray starts its worker processes and they import torch.
    warm_ctx = ScoreContext(job.model, job.ctx.example_input, job.ctx.calibration[:1])
    pruner.score_stages(PruneJob(job.model, job.plan, job.scorer, warm_ctx), stages)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pruner.score_stages(job, stages)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    loopback_ray()
    import ray  # after loopback_ray: Ray reads the setting when it is imported

    # "local": a new instance of its own, even where another on this machine could be joined.
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    job = _job(args.width, args.depth, args.batches, args.batch_size)
    print(f"resnet width {args.width} depth {args.depth}, taylor on {args.batches} batches of {args.batch_size}; "
          f"median of {args.repeats}")
    print(f"{'workers':>7} | {'seconds':>7} | {'speed-up':>8}")
    base = None
    for workers in (int(w) for w in args.workers.split(",")):
        seconds = _seconds(job, workers, args.repeats)
        base = base or seconds
        print(f"{workers:>7} | {seconds:7.2f} | {base / seconds:7.2f}x")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nmachine: {platform.machine()} {os.cpu_count()} CPUs, Ray with {args.cpus} CPUs, "
          f"torch {torch.__version__}, ray {ray.__version__}; load average {load}")
    ray.shutdown()


if __name__ == "__main__":
    main()
