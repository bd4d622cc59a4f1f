"""How well the per-layer latency table (issue 10) predicts students' CPU latency.

For each teacher (the zoo's resnet, mobilenet and vgg, and ``benchmarks.mixnet:mixnet``;
untrained, 1x28x28 images, 10 classes: weights do not change latency), the table is measured
at ``--batch`` and ``--threads`` (or read from the cache), then ``--plans`` random per-layer plans
(a ratio per group in [0, 0.8], and for each resizable conv, one time in two, a kernel size of
3, 5 or 7, as the per_layer space samples them) are predicted and measured, one at a time, with
:func:`prunetune.structure.measure.cpu_latency_ms` on the same threads. Printed per teacher: the table's
measuring time, every plan's MACs share, prediction and measurement, then the mean absolute
percentage error and Kendall's tau between predictions and measurements.

Run it on an otherwise idle machine: the measurements are the reference.

Usage: .venv/bin/python benchmarks/latency_table.py [--teachers resnet,mobilenet,vgg,benchmarks.mixnet:mixnet]
       [--batch 256] [--threads 2] [--plans 15] [--repeats 5] [--seed 0] [--fresh] [--smoke]

``--smoke``: batch 16, 3 plans per teacher, 2 repeats, 1 thread unless ``--threads`` is given, a
fresh table in a temporary folder (checks that it runs; its numbers mean little). ``--fresh``: measure the tables again, in a temporary
folder, instead of reading prunetune's cache.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # ``benchmarks.mixnet:mixnet`` is imported by name

from prunetune.components.models import resolve_model  # noqa: E402
from prunetune.host.manager import Host  # noqa: E402
from prunetune.results.report import format_table  # noqa: E402
from prunetune.structure.kernels import kernel_layers  # noqa: E402
from prunetune.structure.measure import cpu_latency_ms  # noqa: E402
from prunetune.structure.plan import StudentPlan  # noqa: E402
from prunetune.student.budget import MacsCounter  # noqa: E402
from prunetune.student.latency import latency_table  # noqa: E402
from prunetune.training.devices import torch_threads  # noqa: E402

TEACHERS = ("resnet", "mobilenet", "vgg", "benchmarks.mixnet:mixnet")
SHAPE = (1, 28, 28)
KERNEL_SIZES = (3, 5, 7)


def random_plan(rng: random.Random, groups: list[str], kernels: dict[str, int]) -> StudentPlan:
    ratios = {g: round(rng.randrange(0, 17) * 0.05, 2) for g in groups}
    sizes = {name: rng.choice(KERNEL_SIZES) for name in kernels if rng.random() < 0.5}
    return StudentPlan(ratios=ratios, kernels=sizes)


def kendall_tau(xs: list[float], ys: list[float]) -> float:
    """Kendall's tau-a: (concordant - discordant pairs) / all pairs."""
    n = len(xs)
    pairs = n * (n - 1) // 2
    if pairs == 0:
        return float("nan")
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            s = (xs[i] - xs[j]) * (ys[i] - ys[j])
            score += (s > 0) - (s < 0)
    return score / pairs


def bench(name: str, args: argparse.Namespace, cache: Path | None) -> tuple[float, float, float]:
    registry = Host.create().registry
    teacher = resolve_model(registry, name, {}).build(SHAPE[0], 10, SHAPE[1]).eval()
    example = torch.zeros(1, *SHAPE)
    counter = MacsCounter(teacher, example)
    started = time.perf_counter()
    table = latency_table(teacher, example, args.batch, args.threads, KERNEL_SIZES, cache_dir=cache, counter=counter)
    took = time.perf_counter() - started
    source = "from the cache" if table.cached else f"measured in {table.seconds:.1f} s"
    print(f"\n{name}: table {source} ({len(table.layers)} layers, {len(table.entries)} shapes; "
          f"{took:.1f} s with the cache look-up); teacher {table.teacher_ms:.1f} ms per batch of {args.batch}, "
          f"fixed part {table.fixed_ms:.1f} ms + {table.per_activation_ms * 1e3:.3f} us per activation", flush=True)
    rng = random.Random(args.seed)
    groups = [g.name for g in counter.groups()]
    resizable = kernel_layers(teacher)
    full = counter.macs(StudentPlan())
    plans = [StudentPlan()] + [random_plan(rng, groups, resizable) for _ in range(args.plans - 1)]
    rows, predicted, measured = [], [], []
    for i, plan in enumerate(plans):
        guess = table.predict(plan)
        with torch_threads(args.threads):
            real = cpu_latency_ms(counter.architecture(plan), SHAPE, args.batch, args.repeats)
        predicted.append(guess)
        measured.append(real)
        kernels = ",".join(f"{k}" for k in sorted(plan.kernels.values())) or "-"
        rows.append((str(i) if i else "teacher", f"{counter.macs(plan) / full:.3f}", kernels, f"{guess:.1f}",
                     f"{real:.1f}", f"{100 * (guess - real) / real:+.1f}%"))
    print(format_table(("plan", "MACs share", "new kernels", "predicted ms", "measured ms", "error"), rows))
    mape = 100 * statistics.mean(abs(p - m) / m for p, m in zip(predicted, measured))
    tau = kendall_tau(predicted, measured)
    print(f"{name}: mean absolute error {mape:.1f}%, Kendall tau {tau:.2f} over {len(plans)} plans", flush=True)
    return took, mape, tau


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", default=",".join(TEACHERS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: 2; 1 with --smoke)")
    parser.add_argument("--plans", type=int, default=15, help="plans per teacher, the teacher's own included")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each student (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="measure the tables again, in a temporary folder")
    parser.add_argument("--smoke", action="store_true", help="batch 16, 3 plans, 2 repeats, 1 thread, fresh tables")
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.plans, args.repeats, args.fresh = 16, 3, 2, True
    if args.threads is None:
        # Two threads on cores another job keeps busy stall at every op: a smoke run uses one.
        args.threads = 1 if args.smoke else 2
    print(f"latency table benchmark: batch {args.batch}, {args.threads} thread(s), {args.plans} plans per teacher, "
          f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) if args.fresh else None
        results = {name: bench(name, args, cache) for name in args.teachers.split(",")}
    print("\n" + format_table(("teacher", "table s", "mean abs error", "Kendall tau"),
                              [(n, f"{s:.1f}", f"{e:.1f}%", f"{t:.2f}") for n, (s, e, t) in results.items()]))


if __name__ == "__main__":
    main()
