"""Does the adaptive-BN proxy rank plans as they end? (issue 10)

One fixed teacher (from prunetune's teacher cache, trained once with the recipe the arguments
give, as benchmarks/quality.py trains its own) and one MACs budget. ``--plans`` random plans
of the ``per_layer`` space are repaired to the budget and scored by the proxy
(:func:`prunetune.student.proxy.screen`: BatchNorm statistics recomputed on training batches, accuracy on
the validation split, no training). Then each plan's student is built again from the teacher
and distilled with ``hinton`` for ``--epochs`` on ``--train-images`` training images with the
trials' recipe (one cycle, Nesterov), as a trial would, and measured on the test split. Printed: Kendall's tau-b and Spearman's rho between the
proxy and the test accuracy, and between MACs and the test accuracy for reference, and the
time one proxy score costs against one distillation.

Rows go to ``--out`` as they finish, so an interrupted run continues where it stopped (with the
same settings).

Usage: .venv/bin/python benchmarks/proxy_rank.py [--model resnet] [--max-macs 0.25]
       [--plans 24] [--epochs 2] [--train-images N] [--out FILE.json]
Smoke: .venv/bin/python benchmarks/proxy_rank.py --limit 2000 --plans 5 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from prunetune.components.spaces import ModelStructure
from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.jobs.setup import set_up_job  # noqa: E402
from prunetune.jobs.spec import JobSpec
from prunetune.results.report import format_table
from prunetune.structure.measure import count_macs_params
from prunetune.student.proxy import ProxyData, Screened, screen
from prunetune.student.surgery import build_student
from prunetune.training.loop import evaluate, teacher_logits_for
from prunetune.training.recipe import TrainRecipe
from prunetune.training.train import distill

ROOT = Path(__file__).resolve().parent.parent
DATA_FOLDERS = (ROOT.parent / "shared" / "data" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist"))
CPU = torch.device("cpu")


def default_data() -> str:
    for folder in DATA_FOLDERS:
        if folder.is_dir():
            return str(folder)
    return str(DATA_FOLDERS[-1])


# -- rank correlation -----------------------------------------------------------------------


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable accounted for); nan when undefined."""
    n = len(x)
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            tied_x += dx == 0
            tied_y += dy == 0
            concordant += dx * dy > 0
            discordant += dx * dy < 0
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the (tie-averaged) ranks; nan when undefined."""
    rx, ry = _ranks(x), _ranks(y)
    n = len(rx)
    if n < 2:
        return math.nan
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else math.nan


# -- the benchmark --------------------------------------------------------------------------


def fixed_teacher(registry: Any, data: Any, args: argparse.Namespace) -> tuple[torch.nn.Module, str]:
    """``args.model`` trained once with the arguments' recipe and cached (the cache key is that
    of benchmarks/quality.py's teacher for the same model, data and recipe)."""
    spec = JobSpec(model=args.model, teacher_epochs=args.teacher_epochs, batch_size=args.teacher_batch_size,
                   teacher_lr=args.teacher_lr, seed=args.seed, progress=False)
    setup, _ = set_up_job(spec, Host.create(), data=data)
    return setup.obtain_teacher(CPU, echo=lambda line: None)


def _key(result: Screened) -> str:
    return json.dumps(dict(result.params), sort_keys=True)


def trained_accuracy(registry: Any, teacher: torch.nn.Module, data: Any, result: Screened, proxy_data: ProxyData,
                     logits: torch.Tensor, args: argparse.Namespace) -> float:
    """Test accuracy of ``result``'s student built again from the teacher (as its trial builds
    it) and distilled with hinton for ``args.epochs``."""
    student, _ = build_student(teacher, result.plan, registry.create("pruner", args.pruner),
                               registry.create("scorer", args.scorer), data.train_x[:1], proxy_data.calibration,
                               seed=args.seed)
    n = args.train_images or len(data.train_x)
    recipe = TrainRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         schedule=JobSpec.schedule, nesterov=JobSpec.nesterov)
    distill(student, teacher, registry.create("distiller", "hinton"), data.train_x[:n], data.train_y[:n], recipe, CPU,
            teacher_logits=logits[:n], progress=False)
    accuracy, _ = evaluate(student, data.test_x, data.test_y, CPU)
    return accuracy


def report(rows: list[dict[str, Any]], teacher_macs: int) -> str:
    proxy = [r["proxy_accuracy"] for r in rows]
    final = [r["test_accuracy"] for r in rows]
    macs = [float(r["macs"]) for r in rows]
    table = format_table(
        ("rank by proxy", "proxy acc %", "test acc %", "MACs", "distil (s)"),
        [(str(i + 1), f"{r['proxy_accuracy']:.2f}", f"{r['test_accuracy']:.2f}",
          f"{100 * r['macs'] / teacher_macs:.1f}%", f"{r['distill_seconds']:.0f}")
         for i, r in enumerate(sorted(rows, key=lambda r: -r["proxy_accuracy"]))],
    )
    lines = [table, "",
             f"proxy vs test accuracy: Kendall tau-b {kendall_tau_b(proxy, final):+.3f}, "
             f"Spearman {spearman(proxy, final):+.3f} (n={len(rows)})",
             f"MACs  vs test accuracy: Kendall tau-b {kendall_tau_b(macs, final):+.3f}, "
             f"Spearman {spearman(macs, final):+.3f} (reference)"]
    if rows:
        pick = max(rows, key=lambda r: r["proxy_accuracy"])
        place = sorted(final, reverse=True).index(pick["test_accuracy"]) + 1
        lines.append(f"the proxy's pick ends at {pick['test_accuracy']:.2f}% test, rank {place} of {len(rows)} "
                     f"(best {max(final):.2f}%, median {sorted(final)[len(final) // 2]:.2f}%)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet", help="zoo name or package.module:factory")
    parser.add_argument("--data", default=default_data(), help="IDX folder of Fashion-MNIST")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many images per split (smoke runs)")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--teacher-batch-size", type=int, default=128)
    parser.add_argument("--teacher-lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="of the data split, the teacher, the plans and training")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--max-macs", type=float, default=0.25, help="budget relative to the teacher")
    parser.add_argument("--max-ratio", type=float, default=0.9)
    parser.add_argument("--plans", type=int, default=24, help="random plans of the per_layer space")
    parser.add_argument("--scorer", default="l1")
    parser.add_argument("--pruner", default="channel")
    parser.add_argument("--epochs", type=int, default=2, help="F: hinton distillation epochs of every plan")
    parser.add_argument("--train-images", type=int, default=None, help="training images distilled on (default: all)")
    parser.add_argument("--batch-size", type=int, default=JobSpec.batch_size)
    parser.add_argument("--lr", type=float, default=JobSpec.lr, help="peak; the schedule and momentum are the trials' own")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "proxy_rank" / "proxy_rank.json")
    args = parser.parse_args()
    if args.plans < 2:
        parser.error("--plans must be at least 2: a rank correlation needs pairs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    registry = Host.create().registry
    try:
        data = registry.create("dataset", "idx", {"path": args.data, "limit": args.limit}).load(args.seed, args.val_fraction)
    except UsageError as exc:
        parser.error(f"{exc} (pass --data IDX_FOLDER)")
    teacher, source = fixed_teacher(registry, data, args)
    print(f"teacher: {source}", flush=True)
    teacher_macs = count_macs_params(teacher, data.input_shape)[0]
    teacher_test = evaluate(teacher, data.test_x, data.test_y, CPU)[0]
    budget = int(args.max_macs * teacher_macs)

    # Screening is deterministic for a seed: a continued run screens again and gets the same plans.
    proxy_data = ProxyData.of((data.train_x, data.train_y), (data.val_x, data.val_y), args.seed)
    structure = ModelStructure.of(teacher, data.train_x[:1])
    screen_start = time.perf_counter()
    screened = screen(teacher, registry.create("search_space", "per_layer"), structure,
                      registry.create("scorer", args.scorer), registry.create("pruner", args.pruner), proxy_data,
                      args.plans, args.seed, budget_macs=budget, max_ratio=args.max_ratio)
    proxy_seconds = (time.perf_counter() - screen_start) / args.plans
    print(f"screened {args.plans} plans ({len(screened)} within the budget) in {proxy_seconds * args.plans:.1f} s "
          f"({proxy_seconds:.2f} s a plan)", flush=True)
    logits = teacher_logits_for(teacher, data.train_x, CPU)

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "threads")}
    saved = json.loads(args.out.read_text()) if args.out.is_file() else {}
    rows: list[dict[str, Any]] = saved.get("rows", []) if saved.get("settings") == settings else []
    done = {r["key"] for r in rows}
    teacher_row = {"source": source, "test_accuracy": teacher_test, "macs": teacher_macs}
    for result in screened:
        if _key(result) in done:
            continue
        start = time.perf_counter()
        accuracy = trained_accuracy(registry, teacher, data, result, proxy_data, logits, args)
        rows.append({"key": _key(result), **result.to_dict(), "macs_fraction": result.macs / teacher_macs,
                     "test_accuracy": accuracy, "distill_seconds": time.perf_counter() - start})
        args.out.write_text(json.dumps({"settings": settings, "teacher": teacher_row, "proxy_seconds_per_plan": proxy_seconds,
                                        "rows": rows}, indent=1))
        print(f"plan {len(rows)}/{len(screened)}: proxy {result.proxy_accuracy:.2f}% -> test {accuracy:.2f}% "
              f"({100 * result.macs / teacher_macs:.1f}% MACs, {rows[-1]['distill_seconds']:.0f} s)", flush=True)

    print("\n" + report(rows, teacher_macs))
    distill_seconds = sum(r["distill_seconds"] for r in rows) / max(len(rows), 1)
    print(f"\none proxy score {proxy_seconds:.2f} s, one distillation of {args.epochs} epochs {distill_seconds:.0f} s "
          f"({distill_seconds / proxy_seconds:.0f} plans screened in the time of one)")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"teacher {args.model} {teacher_test:.2f}% test; data {args.data} ({len(data.train_x)} train / "
          f"{len(data.val_x)} val / {len(data.test_x)} test); budget {args.max_macs:g} of the teacher's MACs; "
          f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
