"""Compression quality against the standard recipe, on full Fashion-MNIST (issue 5, part 1).

One fixed teacher (zoo resnet, trained once with a fixed recipe and seed, then cached) and two
MACs budgets. For every budget and seed, side by side:

  a. uniform: the smallest single ratio meeting the budget, ``l1`` scorer, ``channel`` pruner,
     cross-entropy fine-tuning for F epochs (Torch-Pruning's documented recipe);
  b. the same student trained for the same F epochs with ``hinton`` distillation;
  c. prunetune: ``prunetune search --space per_layer`` under the budget (N trials of a few
     epochs on a training subset, validation held out of it, the uniform plan first), then the
     best plan distilled with ``hinton`` for the same F epochs on the full training set.

Every student is measured once on the full test split. Results go to ``OUT/quality.json`` as
they finish, so an interrupted run continues where it stopped; the table is printed at the end.

Usage: .venv/bin/python benchmarks/quality.py [--data IDX_FOLDER] [--budgets 0.25,0.10]
       [--seeds 0,1,2] [--epochs 4] [--trials 12] [--trial-epochs 2] [--subset 15000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from prunetune.budget import repair
from prunetune.data import DataSplits
from prunetune.errors import UsageError
from prunetune.host import Host
from prunetune.measure import count_macs_params, measure
from prunetune.plan import StudentPlan
from prunetune.registry import Registry
from prunetune.report import format_table
from prunetune.surgery import build_student
from prunetune.teacher import obtain_teacher
from prunetune.train import TrainRecipe, distill, evaluate, teacher_logits_for, train_supervised

ROOT = Path(__file__).resolve().parent.parent
DATA_FOLDERS = (ROOT.parent / "shared" / "data" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist"))
METHODS = {"a": "uniform + CE fine-tune", "b": "uniform + hinton", "c": "prunetune search + hinton"}
CPU = torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every student of one run shares."""

    registry: Registry
    data: DataSplits
    teacher: torch.nn.Module
    teacher_path: Path
    teacher_logits: torch.Tensor
    teacher_macs: int
    epochs: int
    batch_size: int
    lr: float


def default_data() -> str:
    for folder in DATA_FOLDERS:
        if folder.is_dir():
            return str(folder)
    return str(DATA_FOLDERS[-1])


def fixed_teacher(registry: Registry, data: DataSplits, epochs: int, out: Path) -> tuple[torch.nn.Module, Path, str]:
    """The zoo resnet trained once (12 epochs, batch 128, lr 0.1, seed 0) and cached; also saved
    as a plain state_dict for the search's ``--teacher-checkpoint``."""
    factory = registry.create("model", "resnet")
    c, h, _ = data.input_shape
    meta = {"model": "resnet", "model_options": {}, "input_shape": list(data.input_shape),
            "num_classes": data.num_classes}
    recipe = TrainRecipe(epochs=epochs, batch_size=128, lr=0.1, seed=0)
    teacher, source = obtain_teacher(lambda: factory.build(c, data.num_classes, h), meta, data, recipe, CPU)
    path = out / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    return teacher, path, source


def uniform_plan(teacher: torch.nn.Module, budget_macs: int, example: torch.Tensor) -> StudentPlan:
    """The smallest single ratio whose student fits ``budget_macs``."""
    fix = repair(teacher, StudentPlan(ratio=0.0), budget_macs, example, max_ratio=0.9)
    return StudentPlan(ratio=max(fix.plan.ratios.values(), default=fix.plan.ratio))


def pruned(setup: Setup, plan: StudentPlan, scorer: str, seed: int) -> torch.nn.Module:
    registry, data = setup.registry, setup.data
    calibration = [(data.train_x[i : i + 64], data.train_y[i : i + 64]) for i in range(0, 256, 64)]
    student, _ = build_student(setup.teacher, plan, registry.create("pruner", "channel"),
                               registry.create("scorer", scorer), data.train_x[:1], calibration, seed=seed)
    return student


def finished(setup: Setup, plan: StudentPlan, scorer: str, seed: int, loss: str) -> tuple[torch.nn.Module, float]:
    """Prune by ``plan`` and train for the run's F epochs with ``loss`` (``ce`` or ``hinton``)."""
    data = setup.data
    student = pruned(setup, plan, scorer, seed)
    recipe = TrainRecipe(epochs=setup.epochs, batch_size=setup.batch_size, lr=setup.lr, seed=seed)
    if loss == "ce":
        train_supervised(student, data.train_x, data.train_y, recipe, CPU, progress=False)
    else:
        distill(student, setup.teacher, setup.registry.create("distiller", "hinton"), data.train_x, data.train_y,
                recipe, CPU, teacher_logits=setup.teacher_logits, progress=False)
    accuracy, _ = evaluate(student, data.test_x, data.test_y, CPU)
    return student, accuracy


def searched_plan(setup: Setup, args: argparse.Namespace, budget: float, seed: int) -> tuple[StudentPlan, str, dict[str, Any]]:
    """Run ``prunetune search`` on the training subset; the best trial's plan and scorer."""
    from prunetune.final import choose_trials
    from prunetune.leaderboard import Leaderboard
    from prunetune.search import SearchSpec, run_search

    name = f"q{round(budget * 100):02d}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    spec = SearchSpec(
        model="resnet", dataset="idx", dataset_options={"path": args.data, "limit": min(args.subset, args.limit or args.subset)},
        space="per_layer", strategy="optuna", scorer="l1", pruner="channel", distiller="hinton",
        max_macs=budget, num_samples=args.trials, epochs=args.trial_epochs, final_epochs=0,
        scheduler=args.scheduler, teacher_checkpoint=str(setup.teacher_path), batch_size=setup.batch_size,
        lr=setup.lr, seed=seed, val_fraction=args.search_val_fraction, run_root=str(args.out / "runs"), name=name,
        leaderboard=str(args.out / "leaderboard"), progress=False,
    )
    run_search(spec, echo=lambda _: None)
    rows = Leaderboard(spec.leaderboard).rows(run_id=name)
    best = choose_trials(rows, multi_objective=False)[0]
    trials = [r for r in rows if r["kind"] == "trial"]
    info = {"run_id": name, "best_trial": best["trial_id"], "best_val_accuracy": best["val_accuracy"],
            "trials": len(trials), "ok": sum(r["status"] == "ok" for r in trials)}
    return StudentPlan.from_dict(json.loads(best["plan"])), best["scorer"], info


def one_student(setup: Setup, args: argparse.Namespace, method: str, budget: float, seed: int) -> dict[str, Any]:
    """Make and measure one student; its numbers and wall time (search included)."""
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    budget_macs = int(budget * setup.teacher_macs)
    info: dict[str, Any] = {}
    if method == "c":
        plan, scorer, info = searched_plan(setup, args, budget, seed)
        torch.set_num_threads(args.threads)
    else:
        plan, scorer = uniform_plan(setup.teacher, budget_macs, setup.data.train_x[:1]), "l1"
    student, accuracy = finished(setup, plan, scorer, seed, "ce" if method == "a" else "hinton")
    wall = time.perf_counter() - start
    m = measure(student, accuracy, setup.data.input_shape)
    return {"method": method, "budget": budget, "seed": seed, "test_accuracy": accuracy, "macs": m.macs,
            "params": m.params, "latency_b1_ms": m.latency_b1_ms, "latency_b256_ms": m.latency_b256_ms,
            "wall_seconds": wall, "plan": plan.to_dict(), "scorer": scorer, **info}


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {sd:.2f} ({min(values):.2f}–{max(values):.2f})"


def table(results: list[dict[str, Any]], teacher: dict[str, Any]) -> str:
    header = ("method", "budget", "test acc % (mean ± sd, range)", "MACs", "params", "b1 (ms)", "b256 (ms)",
              "wall (s)")
    rows = [("teacher", "-", f"{teacher['test_accuracy']:.2f}", f"{teacher['macs'] / 1e6:.2f}M (100%)",
             f"{teacher['params'] / 1e3:.1f}k", f"{teacher['latency_b1_ms']:.2f}", f"{teacher['latency_b256_ms']:.1f}",
             "-")]
    for budget in sorted({r["budget"] for r in results}, reverse=True):
        for method, label in METHODS.items():
            group = [r for r in results if r["budget"] == budget and r["method"] == method]
            if not group:
                continue
            mean = lambda key: statistics.mean(r[key] for r in group)  # noqa: E731
            rows.append((f"{method}. {label}", f"{budget:.0%}", spread([r["test_accuracy"] for r in group]),
                         f"{mean('macs') / 1e6:.2f}M ({100 * mean('macs') / teacher['macs']:.1f}%)",
                         f"{mean('params') / 1e3:.1f}k", f"{mean('latency_b1_ms'):.2f}",
                         f"{mean('latency_b256_ms'):.1f}", f"{mean('wall_seconds'):.0f}"))
    return format_table(header, rows)


def verdicts(results: list[dict[str, Any]], teacher: dict[str, Any]) -> list[str]:
    """The issue's quality targets, each with the numbers it rests on."""
    lines = []

    def accs(method: str, budget: float) -> list[float]:
        return [r["test_accuracy"] for r in results if r["method"] == method and abs(r["budget"] - budget) < 1e-9]

    for budget, margin in ((0.25, 0.5), (0.10, 1.0)):
        a, c = accs("a", budget), accs("c", budget)
        if not a or not c:
            continue
        gain = statistics.mean(c) - statistics.mean(a)
        sd = max(statistics.stdev(a) if len(a) > 1 else 0.0, statistics.stdev(c) if len(c) > 1 else 0.0)
        ok = gain >= margin and gain > sd
        lines.append(f"{budget:.0%} MACs: c - a = {gain:+.2f} pts (target >= +{margin}, larger than the sd "
                     f"{sd:.2f}): {'met' if ok else 'NOT met'}")
        if budget == 0.25:
            gap = teacher["test_accuracy"] - statistics.mean(c)
            lines.append(f"25% MACs: teacher - c = {gap:.2f} pts (target <= 0.5): {'met' if gap <= 0.5 else 'NOT met'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data(), help="IDX folder of Fashion-MNIST")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many images per split (smoke runs)")
    parser.add_argument("--budgets", default="0.25,0.10")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="abc")
    parser.add_argument("--epochs", type=int, default=4, help="F: training epochs of every final student")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--trials", type=int, default=12, help="N: search trials")
    parser.add_argument("--trial-epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=15000, help="training images the search reads")
    parser.add_argument("--search-val-fraction", type=float, default=0.2)
    parser.add_argument("--scheduler", default="asha", choices=("fifo", "asha"))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    registry = Host.create().registry
    try:
        data = registry.create("dataset", "idx", {"path": args.data, "limit": args.limit}).load(0, 0.1)
    except UsageError as exc:
        parser.error(f"{exc} (pass --data IDX_FOLDER)")
    teacher, teacher_path, source = fixed_teacher(registry, data, args.teacher_epochs, args.out)
    print(f"teacher: {source}", flush=True)
    logits = teacher_logits_for(teacher, data.train_x, CPU)
    teacher_macs = count_macs_params(teacher, data.input_shape)[0]
    setup = Setup(registry, data, teacher, teacher_path, logits, teacher_macs, args.epochs, args.batch_size, args.lr)
    t = measure(teacher, evaluate(teacher, data.test_x, data.test_y, CPU)[0], data.input_shape)
    teacher_row = {"test_accuracy": t.accuracy, "macs": t.macs, "params": t.params,
                   "latency_b1_ms": t.latency_b1_ms, "latency_b256_ms": t.latency_b256_ms}

    store = args.out / "quality.json"
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "seeds", "budgets", "methods")}
    saved = json.loads(store.read_text()) if store.is_file() else {}
    results = saved.get("results", []) if saved.get("settings") == settings else []
    done = {(r["method"], r["budget"], r["seed"]) for r in results}
    # Seeds outermost: a run cut short still has every budget and method for its first seeds.
    for seed in (int(s) for s in args.seeds.split(",")):
        for budget in (float(b) for b in args.budgets.split(",")):
            for method in args.methods:
                if (method, budget, seed) in done:
                    continue
                result = one_student(setup, args, method, budget, seed)
                results.append(result)
                store.write_text(json.dumps({"settings": settings, "teacher": teacher_row, "results": results}, indent=1))
                print(f"{method} budget {budget:.0%} seed {seed}: {result['test_accuracy']:.2f}% test, "
                      f"{100 * result['macs'] / t.macs:.1f}% MACs, {result['wall_seconds']:.0f} s", flush=True)

    print("\n" + table(results, teacher_row))
    print("\n" + "\n".join(verdicts(results, teacher_row)))
    print(f"\nmachine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"data {args.data} ({len(data.train_x)} train / {len(data.val_x)} val / {len(data.test_x)} test); "
          f"F={args.epochs}, N={args.trials} x {args.trial_epochs} epochs on {args.subset} images "
          f"({args.scheduler}); total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
