"""Which training recipe should prunetune's final stage use (issue 10, deliverable 1)?

For every teacher, one student (the uniform plan meeting the MACs budget, ``l1`` scorer,
``channel`` pruner) is trained for the same F epochs on the full training split with each
recipe below, and measured once on the test split:

- ``prunetune-0.1``: prunetune's defaults before issue 10 (``compress``: F-1 epochs of ``hinton``
  alpha 0.9, T 4, then 1 epoch of cross-entropy at lr/10; SGD momentum 0.9, lr 0.02, cosine,
  batch 64);
- ``onecycle-ce``: the fine-tuning recipe issue 10 names (SGD with Nesterov momentum 0.9,
  one-cycle schedule peaking at lr 0.05, batch 128, weight decay 5e-4), cross-entropy;
- ``onecycle-kd``: the same optimiser with Hinton KD, alpha 0.5, T 4;
- ``kd-0.9-onecycle``: the same optimiser with prunetune's former KD weights (alpha 0.9, T 4).

Results go to ``OUT/recipe.json`` as they finish (an interrupted run continues); the table is
printed at the end. Usage:

    .venv/bin/python benchmarks/recipe.py [--teachers resnet,vgg,...] [--epochs 3] [--budget 0.25]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks.mixnet:mixnet
sys.path.insert(0, str(ROOT / "benchmarks"))

from quality import default_data, fixed_teacher  # noqa: E402

from prunetune.components.scoring import calibration_batches  # noqa: E402
from prunetune.host.manager import Host  # noqa: E402
from prunetune.structure.measure import count_macs_params  # noqa: E402
from prunetune.structure.plan import StudentPlan  # noqa: E402
from prunetune.student.budget import repair  # noqa: E402
from prunetune.student.surgery import build_student  # noqa: E402
from prunetune.training.loop import evaluate, teacher_logits_for  # noqa: E402
from prunetune.training.recipe import TrainRecipe  # noqa: E402
from prunetune.training.train import distill, train_supervised  # noqa: E402

CPU = torch.device("cpu")
TEACHERS = ("resnet", "mobilenet", "vgg", "benchmarks.mixnet:mixnet")
ONECYCLE = {"batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle", "nesterov": True}
RECIPES: dict[str, dict[str, Any]] = {
    "prunetune-0.1": {"loss": "hinton", "alpha": 0.9, "T": 4.0, "finetune": 1,
                      "train": {"batch_size": 64, "lr": 0.02, "schedule": "cosine"}},
    "onecycle-ce": {"loss": "ce", "train": ONECYCLE},
    "onecycle-kd": {"loss": "hinton", "alpha": 0.5, "T": 4.0, "train": ONECYCLE},
    "kd-0.9-onecycle": {"loss": "hinton", "alpha": 0.9, "T": 4.0, "train": ONECYCLE},
}


def student(registry: Any, teacher: torch.nn.Module, data: Any, budget: float, seed: int, scorer: str = "l1",
            options: dict[str, Any] | None = None) -> torch.nn.Module:
    """prunetune's uniform plan at ``budget`` of the MACs (the smallest single ratio that fits),
    built as a trial builds it with ``scorer`` and the ``channel`` pruner."""
    example = data.train_x[:1]
    macs = count_macs_params(teacher, data.input_shape)[0]
    fix = repair(teacher, StudentPlan(ratio=0.0), int(budget * macs), example, max_ratio=0.9)
    plan = StudentPlan(ratio=max(fix.plan.ratios.values(), default=fix.plan.ratio))
    calibration = calibration_batches(data.train_x, data.train_y)
    built, _ = build_student(teacher, plan, registry.create("pruner", "channel"),
                             registry.create("scorer", scorer, options or {}), example, calibration, seed=seed)
    return built


def train(registry: Any, teacher: torch.nn.Module, logits: torch.Tensor, net: torch.nn.Module, data: Any,
          recipe: dict[str, Any], epochs: int, seed: int) -> None:
    finetune = recipe.get("finetune", 0)
    main = TrainRecipe(epochs=epochs - finetune, seed=seed, **recipe["train"])
    if recipe["loss"] == "ce":
        train_supervised(net, data.train_x, data.train_y, main, CPU, progress=False)
    else:
        distiller = registry.create("distiller", "hinton", {"alpha": recipe["alpha"], "T": recipe["T"]})
        distill(net, teacher, distiller, data.train_x, data.train_y, main, CPU, teacher_logits=logits, progress=False)
    if finetune:
        tail = TrainRecipe(epochs=finetune, batch_size=recipe["train"]["batch_size"], lr=recipe["train"]["lr"] * 0.1,
                           seed=seed + 1)
        train_supervised(net, data.train_x, data.train_y, tail, CPU, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--limit", type=int, default=None, help="images per split (smoke runs)")
    parser.add_argument("--teachers", default=",".join(TEACHERS))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=3, help="F: epochs of every recipe")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    registry = Host.create().registry
    data = registry.create("dataset", "idx", {"path": args.data, "limit": args.limit}).load(0, 0.1)
    store = args.out / "recipe.json"
    settings = {"data": args.data, "limit": args.limit, "budget": args.budget, "epochs": args.epochs,
                "teacher_epochs": args.teacher_epochs}
    saved = json.loads(store.read_text()) if store.is_file() else {}
    results: list[dict[str, Any]] = saved.get("results", []) if saved.get("settings") == settings else []
    teachers: dict[str, float] = saved.get("teachers", {}) if saved.get("settings") == settings else {}
    for name in args.teachers.split(","):
        teacher, _, source = fixed_teacher(registry, data, args.teacher_epochs, args.out, name)
        teachers[name] = evaluate(teacher, data.test_x, data.test_y, CPU)[0]
        logits = teacher_logits_for(teacher, data.train_x, CPU)
        print(f"{name}: {source}, {teachers[name]:.2f}% test", flush=True)
        for seed in (int(s) for s in args.seeds.split(",")):
            for recipe in args.recipes.split(","):
                if any(r["teacher"] == name and r["recipe"] == recipe and r["seed"] == seed for r in results):
                    continue
                start = time.perf_counter()
                net = student(registry, teacher, data, args.budget, seed)
                train(registry, teacher, logits, net, data, RECIPES[recipe], args.epochs, seed)
                accuracy = evaluate(net, data.test_x, data.test_y, CPU)[0]
                results.append({"teacher": name, "recipe": recipe, "seed": seed, "test_accuracy": accuracy,
                                "wall_seconds": time.perf_counter() - start})
                store.write_text(json.dumps({"settings": settings, "teachers": teachers, "results": results}, indent=1))
                print(f"  {recipe} seed {seed}: {accuracy:.2f}% ({time.perf_counter() - start:.0f} s)", flush=True)

    names = [n for n in teachers if any(r["teacher"] == n for r in results)]
    print("\n| recipe | " + " | ".join(names) + " | mean |")
    print("|---|" + "---|" * (len(names) + 1))
    for recipe in RECIPES:
        cells = []
        for name in names:
            accs = [r["test_accuracy"] for r in results if r["teacher"] == name and r["recipe"] == recipe]
            cells.append(statistics.mean(accs) if accs else None)
        shown = [f"{c:.2f}" if c is not None else "-" for c in cells]
        mean = statistics.mean(c for c in cells if c is not None) if any(c is not None for c in cells) else None
        print(f"| {recipe} | " + " | ".join(shown) + f" | {mean:.2f} |" if mean is not None else " | - |")
    print("| teacher | " + " | ".join(f"{teachers[n]:.2f}" for n in names) + " | |")
    print(f"\nmachine: {platform.machine()}, {args.threads} threads, torch {torch.__version__}; "
          f"{len(data.train_x)} train / {len(data.test_x)} test; budget {args.budget:.0%} MACs, F={args.epochs}")


if __name__ == "__main__":
    main()
