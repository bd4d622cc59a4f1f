"""Speed measurements (issue 5, part 2).

(a) student CPU latency against MACs for the ``channel`` pruner at several ratios, and ``mask``
    at the same ratios (zoo resnet, width 16, 28x28, l1 scorer; untrained weights: latency
    and MACs do not depend on them);
(b) where a search trial's time goes: training and validation, building and measuring the
    student, and the rest (plugin registry, budget repair, checkpoints, reports), from the
    leaderboard of a per_layer search on the bundled demo data; and the share of the search's
    slot-seconds (fit wall time x concurrent trials) that trained anything;
(c) a ``hinton`` trial's time against a cross-entropy (``none`` distiller) trial's, same search,
    teacher logits cached;
(d) trials per hour with 1 and with 2 concurrent trials (1 CPU each, same search);
(e) wall time of ``prunetune --help`` and ``prunetune plugins`` (fresh processes, median);
(f) where a GPU is present: trials per hour with ``--gpus-per-trial`` 1, 0.5 and 0.25 (1, 2 and
    4 trials sharing the GPU) against 4 CPU trials, the same search. Not in the default parts.

The searches of one part share their seed, so they start from the same plans; TPE's later
suggestions depend on which trials have ended, so longer searches may differ after that.

Parts b-d run searches on an embedded Ray with the demo data's cached teacher (trained once if
missing), writing under ``--out``.

Usage: .venv/bin/python benchmarks/speed.py [--parts abcdef] [--ratios 0.25,0.5,0.75]
       [--threads 2] [--repeats 5] [--trials 12] [--out benchmarks/results/speed]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from prunetune.host.manager import Host
from prunetune.results.report import format_table
from prunetune.structure.measure import count_macs_params, cpu_latency_ms
from prunetune.structure.plan import StudentPlan
from prunetune.student.surgery import build_student

SHAPE = (1, 28, 28)
ROOT = Path(__file__).resolve().parent.parent


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


@dataclasses.dataclass
class Searched:
    """One timed search: its trial rows and the wall time of Tune's ``fit``."""

    rows: list[dict[str, Any]]
    fit_seconds: float
    slots: int


def timed_search(out: Path, name: str, **changes: Any) -> Searched:
    """A per_layer search on the demo data (teacher from the cache); only ``fit`` is timed."""
    from prunetune.components.cluster import ensure_ray
    from prunetune.results.leaderboard import Leaderboard
    from prunetune.searching.prepare import prepare_search
    from prunetune.searching.run import hardware
    from prunetune.searching.spec import SearchSpec
    from prunetune.searching.tuning import RowContext, concurrency, fit_trials

    settings: dict[str, Any] = dict(dataset="fashion_mnist_demo", space="per_layer", max_macs=0.25, num_samples=6,
                                    epochs=2, run_root=str(out / "runs"), leaderboard=str(out / "leaderboard"),
                                    name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", progress=False)
    spec = SearchSpec(**(settings | changes))
    run = prepare_search(spec, echo=lambda _: None)
    run.run_dir.mkdir(parents=True)
    board = Leaderboard(spec.leaderboard)
    ensure_ray(None)  # started before the clock: start-up is once per search, not per trial
    start = time.perf_counter()
    fit_trials(run, board, RowContext.of(run, None, hardware()))
    fit_seconds = time.perf_counter() - start
    rows = [r for r in board.rows(run_id=run.run_id) if r["kind"] == "trial"]
    import ray

    return Searched(rows, fit_seconds, concurrency(spec, ray.cluster_resources()))


def trial_time_split(out: Path, trials: int) -> str:
    """(b) Where the trials' time went, summed over one search's trials."""
    searched = timed_search(out, "speed-b", num_samples=trials)
    rows = [r for r in searched.rows if r["status"] == "ok"]
    total = sum(r["wall_seconds"] for r in rows)
    train = sum(r["train_seconds"] for r in rows)
    prune = sum(r["prune_seconds"] for r in rows)
    other = sum(r["overhead_seconds"] for r in rows)
    share = lambda x: f"{100 * x / total:.1f}%"  # noqa: E731
    per_trial = [100 * r["overhead_seconds"] / r["wall_seconds"] for r in rows]
    table = format_table(
        ("part of the trials' time", "seconds", "share"),
        [("training + validation", f"{train:.1f}", share(train)),
         ("building + measuring the student", f"{prune:.1f}", share(prune)),
         ("everything else (registry, teacher, repair, checkpoints, reports)", f"{other:.1f}", share(other)),
         ("all trials", f"{total:.1f}", "100%")])
    slot_seconds = searched.fit_seconds * searched.slots
    return (f"{table}\n{len(rows)} ok trials of {len(searched.rows)}; per trial, everything else: "
            f"{min(per_trial):.1f}%-{max(per_trial):.1f}%\n"
            f"Tune fit: {searched.fit_seconds:.1f} s x {searched.slots} slots = {slot_seconds:.1f} slot-s; "
            f"outside trials (Ray, Optuna, scheduling, idle slots): {100 * (1 - total / slot_seconds):.1f}%; "
            f"outside training + validation altogether: {100 * (1 - train / slot_seconds):.1f}%")


def distiller_cost(out: Path, trials: int) -> str:
    """(c) The same search trained with ``none`` (cross-entropy) and with ``hinton``."""
    rows = []
    for distiller in ("none", "hinton"):
        searched = timed_search(out, f"speed-c-{distiller}", num_samples=trials, distiller=distiller)
        ok = [r for r in searched.rows if r["status"] == "ok"]
        rows.append((distiller, len(ok), statistics.mean(r["wall_seconds"] for r in ok),
                     statistics.mean(r["train_seconds"] for r in ok)))
    ratio_trial, ratio_train = rows[1][2] / rows[0][2], rows[1][3] / rows[0][3]
    table = format_table(("distiller", "trials", "mean trial (s)", "mean training + validation (s)"),
                         [(d, str(n), f"{t:.2f}", f"{tr:.2f}") for d, n, t, tr in rows])
    return f"{table}\nhinton / cross-entropy: {ratio_trial:.2f}x per trial, {ratio_train:.2f}x in training"


def concurrency(out: Path, trials: int) -> str:
    """(d) Trials per hour with 1 and 2 concurrent trials (1 CPU each), the same search."""
    rates = {}
    for slots in (1, 2):
        searched = timed_search(out, f"speed-d-{slots}", num_samples=trials, max_concurrent=slots,
                                cpus_per_trial=1.0)
        rates[slots] = (len(searched.rows), searched.fit_seconds, 3600 * len(searched.rows) / searched.fit_seconds)
    table = format_table(("concurrent trials", "trials", "fit wall (s)", "trials per hour"),
                         [(str(k), str(n), f"{w:.1f}", f"{r:.0f}") for k, (n, w, r) in rates.items()])
    return f"{table}\n2 concurrent / 1: {rates[2][2] / rates[1][2]:.2f}x"


def gpu_trials(out: Path, trials: int) -> str:
    """(f) Trials per hour on one GPU, shared by 1, 2 and 4 trials, against 4 one-CPU trials."""
    if not torch.cuda.is_available():
        return "no CUDA GPU here: nothing measured"
    rows = []
    for gpus, slots in ((1.0, 1), (0.5, 2), (0.25, 4), (0.0, 4)):
        searched = timed_search(out, f"speed-f-{gpus}", num_samples=trials, max_concurrent=slots,
                                cpus_per_trial=1.0, gpus_per_trial=gpus)
        ok = [r for r in searched.rows if r["status"] == "ok"]
        hardware = ", ".join(sorted({r["hardware"] for r in ok}))
        rows.append((f"{gpus:g}", str(slots), hardware, f"{len(ok)}/{len(searched.rows)}",
                     f"{statistics.mean(r['train_seconds'] for r in ok):.2f}", f"{searched.fit_seconds:.1f}",
                     f"{3600 * len(searched.rows) / searched.fit_seconds:.0f}"))
        print("  " + "  ".join(rows[-1]), flush=True)  # each search as it ends: a lease may end first
    return format_table(("gpus per trial", "concurrent", "trained on", "ok trials", "mean training (s)",
                         "fit wall (s)", "trials per hour"), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="abcde")
    parser.add_argument("--ratios", default="0.25,0.5,0.75")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=12, help="trials of each search in parts b-d and f")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ratios = [float(r) for r in args.ratios.split(",")]
    if set(args.parts) & set("bcdf"):
        from prunetune.components.cluster import loopback_ray

        loopback_ray()
        args.out.mkdir(parents=True, exist_ok=True)
    if "a" in args.parts:
        print("(a) latency against MACs\n" + latency_against_macs(ratios, args.repeats), flush=True)
    if "b" in args.parts:
        print("\n(b) a trial's time\n" + trial_time_split(args.out, args.trials), flush=True)
    if "c" in args.parts:
        print("\n(c) hinton against cross-entropy trials\n" + distiller_cost(args.out, args.trials), flush=True)
    if "d" in args.parts:
        print("\n(d) concurrent trials\n" + concurrency(args.out, args.trials), flush=True)
    if "f" in args.parts:
        print("\n(f) trials on the GPU\n" + gpu_trials(args.out, args.trials), flush=True)
    if "e" in args.parts:
        print("\n(e) command start-up\n" + command_times(args.repeats))
    print(f"\nmachine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")


if __name__ == "__main__":
    main()
