"""Speed measurements (issue 5, parts a and e so far).

(a) student CPU latency against MACs for the ``channel`` pruner at several ratios, and ``mask``
    at the same ratios (zoo resnet, width 16, 28x28, l1 scorer; untrained weights: latency
    and MACs do not depend on them);
(e) wall time of ``prunetune --help`` and ``prunetune plugins`` (fresh processes, median).

Usage: .venv/bin/python benchmarks/speed.py [--ratios 0.25,0.5,0.75] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from prunetune.host import Host
from prunetune.measure import count_macs_params, cpu_latency_ms
from prunetune.plan import StudentPlan
from prunetune.report import format_table
from prunetune.surgery import build_student

SHAPE = (1, 28, 28)


def latency_against_macs(ratios: list[float], repeats: int) -> str:
    registry = Host.create().registry
    teacher = registry.create("model", "resnet").build(1, 10, 28).eval()
    base_macs, _ = count_macs_params(teacher, SHAPE)
    base_b1 = cpu_latency_ms(teacher, SHAPE, 1, repeats * 6)
    base_b256 = cpu_latency_ms(teacher, SHAPE, 256, repeats)
    rows = [("teacher", "-", "100.0%", f"{base_b1:.2f}", f"{base_b256:.1f}", "1.00x", "1.00x")]
    for pruner in ("channel", "mask"):
        for ratio in ratios:
            student, _ = build_student(teacher, StudentPlan(ratio=ratio), registry.create("pruner", pruner),
                                       registry.create("scorer", "l1"), torch.zeros(1, *SHAPE))
            macs, _ = count_macs_params(student, SHAPE)
            b1 = cpu_latency_ms(student, SHAPE, 1, repeats * 6)
            b256 = cpu_latency_ms(student, SHAPE, 256, repeats)
            rows.append((pruner, f"{ratio:.2f}", f"{100 * macs / base_macs:.1f}%", f"{b1:.2f}", f"{b256:.1f}",
                         f"{base_macs / macs:.2f}x", f"{base_b256 / b256:.2f}x"))
    header = ("pruner", "ratio", "MACs", "b1 (ms)", "b256 (ms)", "MACs reduction", "speed-up b256")
    return format_table(header, rows)


def command_times(repeats: int) -> str:
    exe = str(Path(sys.executable).with_name("prunetune"))
    rows = []
    for args in (["--help"], ["plugins"]):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([exe, *args], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        rows.append((f"prunetune {' '.join(args)}", f"{statistics.median(times):.3f}", f"{min(times):.3f}"))
    return format_table(("command", "median (s)", "min (s)"), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default="0.25,0.5,0.75")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ratios = [float(r) for r in args.ratios.split(",")]
    print("(a) latency against MACs\n" + latency_against_macs(ratios, args.repeats))
    print("\n(e) command start-up\n" + command_times(args.repeats))
    print(f"\nmachine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")


if __name__ == "__main__":
    main()
