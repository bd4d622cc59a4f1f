"""Issue-2 acceptance: a channel-pruned ResNet at ratio 0.5 on the bundled demo data.

Runs the ``compress`` job (teacher from the cache or trained once, l1 scorer, channel pruner,
hinton distillation for 10 epochs, no fine-tuning) and prints teacher and student side by side:
test accuracy, MACs share, and the CPU speed-up at batch 256. Usage:

    .venv/bin/python benchmarks/compress_resnet.py [--epochs 10] [--ratio 0.5] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from prunetune.jobs.compress import run_compress
from prunetune.jobs.spec import CompressSpec
from prunetune.results.report import side_by_side
from prunetune.structure.plan import StudentPlan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    spec = CompressSpec(
        model="resnet", dataset="fashion_mnist_demo", scorer="l1", pruner="channel",
        distiller="hinton", plan=StudentPlan(ratio=args.ratio), epochs=args.epochs,
        finetune_epochs=0, seed=args.seed, device="cpu", out=None, progress=False,
    )
    result = run_compress(spec)
    wall = time.perf_counter() - start
    t, s = result.teacher, result.student
    print(side_by_side(t, s))
    print(
        f"\nmachine: {platform.machine()} {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
        f"wall {wall:.0f}s (teacher: {result.teacher_source.split(' ')[0]})\n"
        f"MACs share {100 * s.macs / t.macs:.1f}% | speed-up b256 {t.latency_b256_ms / s.latency_b256_ms:.2f}x "
        f"| speed-up b1 {t.latency_b1_ms / s.latency_b1_ms:.2f}x | accuracy gap {t.accuracy - s.accuracy:+.2f} pts"
    )


if __name__ == "__main__":
    main()
