"""Compression quality on four teachers against Torch-Pruning itself, on full Fashion-MNIST (issue 10).

Teachers: the zoo ``resnet``, ``mobilenet`` and ``vgg`` and the user model
``benchmarks.mixnet:mixnet`` (residual, two-branch concat and depthwise blocks), each trained
once by :func:`fixed_teacher` and cached. For every seed, teacher and MACs budget, in this order:

  a. Torch-Pruning itself: ``tp.pruner.MetaPruner`` with ``GroupMagnitudeImportance(p=2)``
     (its default), local pruning, the classifier ignored, one ``pruning_ratio`` found by
     bisection (the largest student at most the budget), then the fine-tuning recipe the issue
     names: SGD with Nesterov momentum 0.9, one cycle peaking at lr 0.05 (momentum not cycled),
     weight decay 5e-4, batch 128 (last partial batch dropped), F epochs of cross-entropy.
     ``--tp-schedule step`` uses Torch-Pruning's ``reproduce/main.py`` instead: plain momentum,
     lr 0.01 (``--tp-lr``) x0.1 at 60% and 80% of the steps;
  b. the same student and recipe with Hinton KD: ``0.5 * CE + 0.5 * 4^2 * KL(t/4 || s/4)``;
  d. ``prunetune search`` (N trials of a few epochs on a training subset, MACs budget, the
     teacher as ``--teacher-checkpoint``, ``--final-epochs 0``), then ``prunetune compress
     --plan BEST`` with the best trial's scorer, distiller and options and otherwise
     prunetune's defaults, for F distillation epochs on the full training split (compress's
     default fine-tuning is none: its one-cycle KD recipe was better without). At most
     ``--threads`` trials at once; ``--search-args`` adds SearchSpec fields (those compress
     shares, like ``lr`` or ``nesterov``, go to compress too, as a user would pass them);
  c. b given F+E epochs, E the epochs b could have run in d's search time (equal compute),
     from b's measured seconds per epoch; skipped (with a note) until b and d have run;
  e. (only when asked for with ``--methods``) d's search, then ``prunetune compress --from``
     the best trial's last checkpoint instead of ``--plan``: the final student warm-started
     from the trial's weights, the same F epochs; its wall time counts d's search.

a, b and c train on the same split compress trains on (``val_fraction`` 0.1, seeded); every
student is evaluated once on the full test split and measured with prunetune's ``measure``
(MACs, params, batch-1 and batch-256 CPU latency) and saved; at the end, the students of each
teacher, budget and seed are timed again in turn, 5 rounds, each keeping its least median
(:func:`remeasure`): timed once as they were made, identical students differed by 40%. Wall time: pruning and training for a, b, c
(KD also pays for the teacher's logits); the search plus compress for d. Results go to
``OUT/quality.json`` after every student, so an interrupted run continues where it stopped
(results are reused only under the same settings and teacher). Prints a table per teacher and
the issue's targets, averaged over the teachers.

Usage: .venv/bin/python benchmarks/quality.py [--teachers resnet,mobilenet,vgg,benchmarks.mixnet:mixnet]
       [--budgets 0.25,0.10] [--seeds 0,1,2] [--methods abcd(e)] [--epochs 4] [--trials 12]
       [--trial-epochs 2] [--subset 15000] [--search-args '{"scheduler": "asha"}']
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# ``benchmarks.mixnet:mixnet`` is imported by name here and in Ray's workers, which inherit
# PYTHONPATH from the process that starts Ray.
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

import torch  # noqa: E402
import torch_pruning as tp  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.quality_common import Bench, Teacher, find, slug  # noqa: E402
from benchmarks.quality_prunetune import parse_search_args, prunetune_method, warm_started  # noqa: E402
from benchmarks.quality_report import METHODS, TEACHERS, table, verdicts  # noqa: E402
from benchmarks.quality_tp import TPRecipe, logits_of, tp_student, tp_train  # noqa: E402
from prunetune.components.data import DataSplits  # noqa: E402
from prunetune.errors import UsageError  # noqa: E402
from prunetune.host.manager import Host  # noqa: E402
from prunetune.host.registry import Registry  # noqa: E402
from prunetune.jobs.setup import set_up_job  # noqa: E402
from prunetune.jobs.spec import JobSpec  # noqa: E402
from prunetune.structure.measure import cpu_latency_ms, measure  # noqa: E402
from prunetune.training.loop import evaluate  # noqa: E402

DATA_FOLDERS = (ROOT.parent / "shared" / "data" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist"))
ORDER = "abdce"  # c needs d's search time, e d's search
CPU = torch.device("cpu")


def default_data() -> str:
    for folder in DATA_FOLDERS:
        if folder.is_dir():
            return str(folder)
    return str(DATA_FOLDERS[-1])


def fixed_teacher(registry: Registry, data: DataSplits, epochs: int, out: Path,
                  model: str = "resnet") -> tuple[torch.nn.Module, Path, str]:
    """``model`` trained once (``epochs``, batch 128, lr 0.1, seed 0) and cached; also saved
    as a plain state_dict for the search's ``--teacher-checkpoint``."""
    spec = JobSpec(model=model, teacher_epochs=epochs, batch_size=128, teacher_lr=0.1, seed=0, progress=False)
    setup, _ = set_up_job(spec, Host.create(), data=data)
    teacher, source = setup.obtain_teacher(CPU, echo=lambda line: None)
    path = out / f"teacher-{model.replace(':', '-').replace('.', '-')}.pt"
    torch.save(teacher.state_dict(), path)
    return teacher, path, source



# -- a, b, c: Torch-Pruning itself ----------------------------------------------------------


def teacher_logits(teacher: Teacher, data: DataSplits, seed: int) -> tuple[torch.Tensor, float]:
    """The teacher's logits of this seed's training split, and the seconds they took (once)."""
    if seed not in teacher.logits:
        teacher.logits.clear()  # seeds run one after another: keep one split's logits
        start = time.perf_counter()
        logits = logits_of(teacher.model, data.train_x)
        teacher.logits[seed] = (logits, time.perf_counter() - start)
    return teacher.logits[seed]


def tp_method(bench: Bench, teacher: Teacher, data: DataSplits, method: str, budget: float, seed: int,
              epochs: float) -> tuple[nn.Module, dict[str, Any]]:
    """a (cross-entropy), b or c (KD): prune with Torch-Pruning and train for ``epochs``."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    example = data.train_x[:1]
    student, ratio = tp_student(teacher.model, int(budget * teacher.macs), example, data.num_classes)
    prune_seconds = time.perf_counter() - start
    logits, logit_seconds = teacher_logits(teacher, data, seed) if method != "a" else (None, 0.0)
    steps = round(epochs * (len(data.train_x) // bench.recipe.batch_size))
    start = time.perf_counter()
    tp_train(student, data.train_x, data.train_y, bench.recipe, steps, seed, logits)
    train_seconds = time.perf_counter() - start
    return student, {"ratio": ratio, "epochs": epochs, "steps": steps, "prune_seconds": prune_seconds,
                     "logit_seconds": logit_seconds, "train_seconds": train_seconds,
                     "wall_seconds": prune_seconds + logit_seconds + train_seconds}


def extra_epochs(results: list[dict[str, Any]], teacher: str, budget: float, seed: int,
                 epochs: int) -> tuple[float | None, str]:
    """E for method c: d's search seconds over b's seconds per epoch; None and why, if unknown."""
    b, d = (find(results, teacher, m, budget, seed) for m in "bd")
    if b is None or d is None:
        missing = [m for m, r in (("b", b), ("d", d)) if r is None]
        verb = "has" if len(missing) == 1 else "have"
        return None, f"c skipped for {teacher} {budget:.0%} seed {seed}: {' and '.join(missing)} {verb} not run"
    per_epoch = b["train_seconds"] / epochs
    return d["search_seconds"] / per_epoch, f"E = {d['search_seconds']:.0f} s / {per_epoch:.1f} s per epoch"


# -- one student, the run --------------------------------------------------------------------


def one_student(bench: Bench, teacher: Teacher, data: DataSplits, results: list[dict[str, Any]],
                method: str, budget: float, seed: int) -> dict[str, Any] | str:
    """Make, evaluate and measure one student; its record, or why it was skipped."""
    torch.set_num_threads(bench.args.threads)
    epochs: float = bench.args.epochs
    note = ""
    if method == "c":
        extra, note = extra_epochs(results, teacher.name, budget, seed, bench.args.epochs)
        if extra is None:
            return note
        epochs += extra
    if method == "d":
        student, info = prunetune_method(bench, teacher, budget, seed)
    elif method == "e":
        made = warm_started(bench, teacher, results, budget, seed)
        if isinstance(made, str):
            return made
        student, info = made
    else:
        student, info = tp_method(bench, teacher, data, method, budget, seed, epochs)
    accuracy, _ = evaluate(student, data.test_x, data.test_y, CPU)
    m = measure(student, accuracy, data.input_shape)
    if tuple(student.eval()(data.test_x[:2]).shape) != (2, data.num_classes):
        raise RuntimeError(f"{method} changed {teacher.name}'s output shape")
    # The whole module (Torch-Pruning's students have no plan to rebuild them from), so that
    # the students of one teacher, budget and seed are timed again side by side (remeasure).
    folder = bench.args.out / "students"
    folder.mkdir(exist_ok=True)
    path = folder / f"{slug(teacher.name)}-{method}-q{round(budget * 100):02d}-s{seed}.pt"
    torch.save(student.cpu().eval(), path)
    return {"teacher": teacher.name, "method": method, "budget": budget, "seed": seed, "test_accuracy": accuracy,
            "student_file": path.name,
            "macs": m.macs, "macs_fraction": m.macs / teacher.macs, "params": m.params,
            "latency_b1_ms": m.latency_b1_ms, "latency_b256_ms": m.latency_b256_ms, **info,
            **({"note": note} if note else {})}


def load_teachers(registry: Registry, data: DataSplits, args: argparse.Namespace) -> dict[str, Teacher]:
    teachers = {}
    for name in args.teachers.split(","):
        model, path, source = fixed_teacher(registry, data, args.teacher_epochs, args.out, name)
        print(f"teacher {name}: {source}", flush=True)
        accuracy, _ = evaluate(model, data.test_x, data.test_y, CPU)
        t = measure(model, accuracy, data.input_shape)
        row = {"test_accuracy": t.accuracy, "macs": t.macs, "params": t.params,
               "latency_b1_ms": t.latency_b1_ms, "latency_b256_ms": t.latency_b256_ms}
        teachers[name] = Teacher(name, model, path, source, t.macs, row)
    return teachers


def previous(store: Path, settings: dict[str, Any],
             teachers: dict[str, Teacher]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Results and teacher rows of earlier runs with the same settings, less those of a teacher
    that changed since (retrained: another test accuracy)."""
    saved = json.loads(store.read_text()) if store.is_file() else {}
    if saved.get("settings") != settings:
        return [], {}
    rows = saved.get("teachers", {})
    changed = {n for n, t in teachers.items() if n in rows and rows[n].get("test_accuracy") != t.row["test_accuracy"]}
    return [r for r in saved.get("results", []) if r["teacher"] not in changed], rows


def run(bench: Bench, teachers: dict[str, Teacher], data0: DataSplits, store: Path,
        settings: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every student not made yet, seeds outermost, so a run cut short has complete seeds."""
    args = bench.args
    results, saved_rows = previous(store, settings, teachers)
    rows = {**saved_rows, **{n: t.row for n, t in teachers.items()}}  # other teachers' results stay stored
    notes: list[str] = []
    for seed in seeds(args):
        data = data0 if seed == 0 else load_data(bench.registry, args, seed)
        for teacher in teachers.values():
            for budget in budgets(args):
                for method in (m for m in ORDER if m in args.methods):
                    if find(results, teacher.name, method, budget, seed):
                        continue
                    result = one_student(bench, teacher, data, results, method, budget, seed)
                    if isinstance(result, str):
                        notes.append(result)
                        print(result, flush=True)
                        continue
                    results.append(result)
                    saved = {"settings": settings, "teachers": rows, "results": results}
                    store.write_text(json.dumps(saved, indent=1))
                    print(f"{teacher.name} {method} budget {budget:.0%} seed {seed}: {result['test_accuracy']:.2f}% "
                          f"test, {100 * result['macs_fraction']:.1f}% MACs, {result['wall_seconds']:.0f} s", flush=True)
    notes += remeasure(results, args.out, data0.input_shape)
    store.write_text(json.dumps({"settings": settings, "teachers": rows, "results": results}, indent=1))
    return results, notes


def remeasure(results: list[dict[str, Any]], out: Path, input_shape: tuple[int, int, int],
              rounds: int = 5) -> list[str]:
    """Time the students of each teacher, budget and seed again, in turn, ``rounds`` times; keep
    each student's least median (batch 1 and 256).

    Timed one after another as they were made, identical students differed by 40% at batch
    256 (the machine's state drifts); interleaved rounds share that drift. The first numbers
    stay as ``inline_latency_*``. Returns one note per group that could not be timed again.
    """
    notes = []
    groups: dict[tuple[str, float, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["teacher"], r["budget"], r["seed"]), []).append(r)
    for (teacher, budget, seed), group in groups.items():
        files = {r["method"]: out / "students" / r.get("student_file", "-") for r in group}
        if len(group) < 2 or all(r.get("remeasured") for r in group):
            continue
        missing = sorted(m for m, f in files.items() if not f.is_file())
        if missing:
            notes.append(f"{teacher} {budget:.0%} seed {seed}: latencies as first timed ({', '.join(missing)} "
                         f"not saved)")
            continue
        models = {m: torch.load(f, weights_only=False) for m, f in files.items()}
        best: dict[str, dict[int, float]] = {m: {} for m in models}
        for _ in range(rounds):
            for method, model in models.items():
                for batch, repeats in ((1, 30), (256, 10)):
                    ms = cpu_latency_ms(model, input_shape, batch, repeats)
                    best[method][batch] = min(ms, best[method].get(batch, ms))
        for r in group:
            r.setdefault("inline_latency_b1_ms", r["latency_b1_ms"])
            r.setdefault("inline_latency_b256_ms", r["latency_b256_ms"])
            r.update(latency_b1_ms=best[r["method"]][1], latency_b256_ms=best[r["method"]][256], remeasured=True)
    return notes


def seeds(args: argparse.Namespace) -> list[int]:
    return [int(s) for s in args.seeds.split(",")]


def budgets(args: argparse.Namespace) -> list[float]:
    return [float(b) for b in args.budgets.split(",")]


def load_data(registry: Registry, args: argparse.Namespace, seed: int) -> DataSplits:
    # The teacher's cache key rests on the seed-0 split; students train on their seed's, as compress does.
    return registry.create("dataset", "idx", {"path": args.data, "limit": args.limit}).load(seed, 0.1)


# -- reporting -------------------------------------------------------------------------------



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data(), help="IDX folder of Fashion-MNIST")
    parser.add_argument("--limit", type=int, default=None,
                        help="read at most this many images per split (smoke runs)")
    parser.add_argument("--teachers", default=",".join(TEACHERS), help="zoo names or module:factory, comma-separated")
    parser.add_argument("--budgets", default="0.25,0.10")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="abcd")
    parser.add_argument("--epochs", type=int, default=4, help="F: training epochs of every final student")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--tp-schedule", choices=("onecycle", "step"), default=TPRecipe.schedule,
                        help="a/b/c's fine-tuning: SGD Nesterov one cycle, or reproduce/main.py's step decay")
    parser.add_argument("--tp-lr", type=float, default=None,
                        help="a/b/c's (peak) learning rate (default: 0.05 one cycle, 0.01 step)")
    parser.add_argument("--trials", type=int, default=12, help="N: search trials")
    parser.add_argument("--trial-epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=15000, help="training images the search reads")
    parser.add_argument("--search-val-fraction", type=float, default=0.2)
    parser.add_argument("--search-args", default="{}", metavar="JSON",
                        help="extra SearchSpec fields, e.g. '{\"scheduler\": \"asha\"}'; "
                             "those compress shares (JobSpec's) go to compress too")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, and concurrent search trials")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality")
    args = parser.parse_args()
    if set(args.methods) - set(METHODS):
        parser.error(f"--methods takes letters of {''.join(METHODS)}, got {args.methods!r}")
    try:
        if not all(0.0 < b <= 1.0 for b in budgets(args)) or not seeds(args):
            raise ValueError
    except ValueError:
        parser.error(f"--budgets takes fractions in (0, 1] and --seeds integers, comma-separated; "
                     f"got {args.budgets!r} and {args.seeds!r}")
    try:
        search_args = parse_search_args(args.search_args)
    except UsageError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    registry = Host.create().registry
    try:
        data = registry.create("dataset", "idx", {"path": args.data, "limit": args.limit}).load(0, 0.1)
    except UsageError as exc:
        parser.error(f"{exc} (pass --data IDX_FOLDER)")
    teachers = load_teachers(registry, data, args)
    lr = args.tp_lr or (TPRecipe.lr if args.tp_schedule == "onecycle" else 0.01)
    bench = Bench(args, registry, TPRecipe(schedule=args.tp_schedule, lr=lr), search_args)
    skip = ("out", "seeds", "budgets", "methods", "teachers", "search_args")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip}
    settings |= {"search_args": search_args, "tp_recipe": dataclasses.asdict(bench.recipe),
                 "torch_pruning": tp.__version__}
    settings = json.loads(json.dumps(settings))  # as stored (tuples become lists), so the two compare
    results, notes = run(bench, teachers, data, args.out / "quality.json", settings)

    rows = {n: t.row for n, t in teachers.items()}
    asked = [r for r in results if r["teacher"] in rows and r["method"] in args.methods
             and r["seed"] in seeds(args) and any(abs(r["budget"] - b) < 1e-9 for b in budgets(args))]
    for name, row in rows.items():
        print(f"\n{name}\n" + table([r for r in asked if r["teacher"] == name], row))
    print("\n" + "\n".join(verdicts(asked, rows, args.threads)))
    if notes:
        print("\n" + "\n".join(notes))
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads, torch "
          f"{torch.__version__}, torch-pruning {version('torch-pruning')}; data {args.data} ({len(data.train_x)} train / "
          f"{len(data.val_x)} val / {len(data.test_x)} test); F={args.epochs}, N={args.trials} x {args.trial_epochs} "
          f"epochs on {args.subset} images, search args {json.dumps(search_args)}; "
          f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
