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
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# ``benchmarks.mixnet:mixnet`` is imported by name here and in Ray's workers, which inherit
# PYTHONPATH from the process that starts Ray.
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_pruning as tp  # noqa: E402
from torch import nn  # noqa: E402

from prunetune.components.data import DataSplits  # noqa: E402
from prunetune.errors import UsageError  # noqa: E402
from prunetune.host.manager import Host  # noqa: E402
from prunetune.host.registry import Registry  # noqa: E402
from prunetune.jobs.setup import set_up_job  # noqa: E402
from prunetune.jobs.spec import JobSpec  # noqa: E402
from prunetune.results.report import format_table  # noqa: E402
from prunetune.searching.spec import SearchSpec  # noqa: E402
from prunetune.structure.measure import cpu_latency_ms, measure  # noqa: E402
from prunetune.structure.plan import StudentPlan  # noqa: E402
from prunetune.training.loop import evaluate  # noqa: E402

DATA_FOLDERS = (ROOT.parent / "shared" / "data" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist"))
TEACHERS = ("resnet", "mobilenet", "vgg", "benchmarks.mixnet:mixnet")
METHODS = {"a": "TP + fine-tune", "b": "TP + KD", "c": "TP + KD, equal compute", "d": "prunetune search + compress",
           "e": "d, warm-started from its trial"}
ORDER = "abdce"  # c needs d's search time, e d's search
CPU = torch.device("cpu")
# SearchSpec fields the benchmark sets itself: --search-args may not override them.
CONTROLLED = ("model", "model_options", "dataset", "dataset_options", "teacher_checkpoint", "seed", "max_macs",
              "num_samples", "epochs", "final_epochs", "run_root", "name", "leaderboard", "progress", "val_fraction")


@dataclasses.dataclass(frozen=True)
class TPRecipe:
    """The baselines' fine-tuning recipe, and the KD baseline's loss.

    ``onecycle``: SGD, Nesterov, one cycle, as the issue names Torch-Pruning's documented
    fine-tuning; ``step``: ``reproduce/main.py``'s multi-step decay (its lr is 0.01).
    """

    schedule: str = "onecycle"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    milestones: tuple[float, ...] = (0.6, 0.8)  # of all steps, as 60,80 of TP's 100 epochs
    gamma: float = 0.1
    alpha: float = 0.5
    T: float = 4.0


@dataclasses.dataclass
class Teacher:
    """One trained teacher and what every student of it shares."""

    name: str
    model: nn.Module
    path: Path
    source: str
    macs: int
    row: dict[str, Any]
    logits: dict[int, tuple[torch.Tensor, float]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Bench:
    """The run's settings and shared inputs."""

    args: argparse.Namespace
    registry: Registry
    recipe: TPRecipe
    search_args: dict[str, Any]


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


def slug(name: str) -> str:
    return name.replace(":", "-").replace(".", "-")


# -- a, b, c: Torch-Pruning itself ----------------------------------------------------------


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The output layers, found as Torch-Pruning's ``reproduce/main.py`` finds them."""
    return [m for m in model.modules()
            if (isinstance(m, nn.Linear) and m.out_features == num_classes)
            or (isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == num_classes)]


def tp_prune(teacher: nn.Module, ratio: float, example: torch.Tensor, num_classes: int) -> nn.Module:
    """A copy of ``teacher`` pruned by Torch-Pruning at one ``ratio`` for every group."""
    student = copy.deepcopy(teacher).eval()
    for param in student.parameters():
        param.requires_grad_(True)
    pruner = tp.pruner.MetaPruner(
        student, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=classifier_layers(student, num_classes), global_pruning=False, round_to=None,
    )
    pruner.step()
    return student


def tp_student(teacher: nn.Module, budget_macs: int, example: torch.Tensor, num_classes: int,
               steps: int = 12, top: float = 0.9) -> tuple[nn.Module, float]:
    """The largest Torch-Pruning student within ``budget_macs``, its ratio found by bisection.

    Raises:
        RuntimeError: not even ``top`` meets the budget.
    """

    def pruned(ratio: float) -> tuple[int, nn.Module]:
        student = tp_prune(teacher, ratio, example, num_classes)
        return int(tp.utils.count_ops_and_params(student, example)[0]), student

    macs, student = pruned(top)
    if macs > budget_macs:
        raise RuntimeError(f"Torch-Pruning cannot meet {budget_macs} MACs: ratio {top} keeps {macs}")
    best = (macs, top, student)
    lo, hi = 0.0, top
    for _ in range(steps):
        ratio = (lo + hi) / 2
        macs, student = pruned(ratio)
        if macs <= budget_macs:
            hi = ratio
            if macs > best[0]:
                best = (macs, ratio, student)
        else:
            lo = ratio
    return best[2], best[1]


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, alpha: float, T: float) -> torch.Tensor:
    """Hinton et al.: ``(1 - alpha) * CE + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``."""
    soft = F.kl_div(F.log_softmax(student / T, dim=1), F.softmax(teacher / T, dim=1), reduction="batchmean")
    return (1 - alpha) * F.cross_entropy(student, y) + alpha * T * T * soft


def tp_train(student: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: TPRecipe, steps: int, seed: int,
             teacher_logits: torch.Tensor | None = None) -> None:
    """The baselines' recipe for ``steps`` steps: cross-entropy, or KD with ``teacher_logits``."""
    per_epoch = len(x) // recipe.batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(x)} training images are fewer than one batch of {recipe.batch_size}")
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    onecycle = recipe.schedule == "onecycle"
    opt = torch.optim.SGD(student.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, nesterov=onecycle)
    if onecycle:
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=max(steps, 1),
                                                         cycle_momentum=False)
    else:
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(m * steps) for m in recipe.milestones], recipe.gamma)
    student.train()
    done = 0
    while done < steps:
        order = torch.randperm(len(x), generator=shuffle)
        for i in range(min(per_epoch, steps - done)):
            idx = order[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            out = student(x[idx])
            if teacher_logits is None:
                loss = F.cross_entropy(out, y[idx])
            else:
                loss = kd_loss(out, teacher_logits[idx], y[idx], recipe.alpha, recipe.T)
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss became {loss.item()} at step {done}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
    student.eval()


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


# -- d: prunetune ---------------------------------------------------------------------------


def parse_search_args(text: str) -> dict[str, Any]:
    """``--search-args``: extra SearchSpec fields as a JSON object.

    Raises:
        UsageError: not a JSON object, an unknown field, or one the benchmark sets itself.
    """
    try:
        extra = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--search-args is not JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise UsageError("--search-args must be a JSON object of SearchSpec fields")
    known = {f.name for f in dataclasses.fields(SearchSpec)}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise UsageError(f"--search-args: SearchSpec has no {', '.join(unknown)} "
                         f"(fields: {', '.join(sorted(known))})")
    taken = sorted(set(extra) & set(CONTROLLED))
    if taken:
        raise UsageError(f"--search-args: {', '.join(taken)} are set by the benchmark's own flags")
    return extra


def searched(bench: Bench, teacher: Teacher, budget: float, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``prunetune search`` under the budget; the best trial's row and what the search did."""
    import ray

    from prunetune.results.leaderboard import Leaderboard
    from prunetune.searching.final import choose_trials
    from prunetune.searching.run import run_search

    args = bench.args
    name = f"{slug(teacher.name)}-q{round(budget * 100):02d}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    settings: dict[str, Any] = {"max_concurrent": args.threads, **bench.search_args}
    spec = SearchSpec(
        model=teacher.name, dataset="idx",
        dataset_options={"path": args.data, "limit": min(args.subset, args.limit or args.subset)},
        teacher_checkpoint=str(teacher.path), max_macs=budget, num_samples=args.trials, epochs=args.trial_epochs,
        final_epochs=0, seed=seed, val_fraction=args.search_val_fraction, run_root=str(args.out / "runs"),
        name=name, leaderboard=str(args.out / "leaderboard"), progress=False, **settings,
    )
    try:
        run_search(spec, echo=lambda _: None)
    finally:
        ray.shutdown()  # as when the user's `prunetune search` exits; nothing left running
        torch.set_num_threads(args.threads)
    rows = Leaderboard(spec.leaderboard).rows(run_id=name)
    chosen = choose_trials(rows, multi_objective=len(spec.objectives) > 1)
    if not chosen:
        raise RuntimeError(f"search {name} kept no student (see {args.out / 'runs' / name})")
    trials = [r for r in rows if r["kind"] == "trial"]
    info = {"run_id": name, "best_trial": chosen[0]["trial_id"], "best_val_accuracy": chosen[0]["val_accuracy"],
            "trials": len(trials), "ok": sum(r["status"] == "ok" for r in trials)}
    return chosen[0], info


def compressed(bench: Bench, teacher: Teacher, row: dict[str, Any], seed: int, name: str,
               start_from: Path | None = None) -> nn.Module:
    """``prunetune compress --plan`` with the trial's plan and components, F epochs in all; with
    ``start_from``, ``--from`` that checkpoint of the trial instead of ``--plan``."""
    from prunetune.jobs.compress import run_compress
    from prunetune.jobs.spec import CompressSpec

    args = bench.args
    params = json.loads(row["params_json"] or "{}")
    shared = {k: v for k, v in bench.search_args.items() if k in {f.name for f in dataclasses.fields(JobSpec)}}
    (args.out / "students").mkdir(exist_ok=True)
    spec = CompressSpec(
        model=teacher.name, dataset="idx", dataset_options={"path": args.data, "limit": args.limit},
        teacher_checkpoint=str(teacher.path),
        **({"start_from": str(start_from)} if start_from else {"plan": StudentPlan.from_dict(json.loads(row["plan"]))}),
        scorer=row["scorer"], distiller=row["distiller"],
        distiller_options={k: params[k] for k in ("T", "alpha") if k in params},
        epochs=args.epochs, seed=seed, device="cpu",
        out=str(args.out / "students" / f"{name}.pt"), progress=False, **shared,
    )
    return run_compress(spec, echo=lambda _: None).model


def prunetune_method(bench: Bench, teacher: Teacher, budget: float, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """d: the search, then compress with the best plan."""
    start = time.perf_counter()
    row, info = searched(bench, teacher, budget, seed)
    search_seconds = time.perf_counter() - start
    start = time.perf_counter()
    student = compressed(bench, teacher, row, seed, info["run_id"])
    final_seconds = time.perf_counter() - start
    return student, {**info, "plan": json.loads(row["plan"]), "scorer": row["scorer"], "distiller": row["distiller"],
                     "search_seconds": search_seconds, "final_seconds": final_seconds,
                     "wall_seconds": search_seconds + final_seconds}


def trial_checkpoint(run_dir: Path, trial_id: str) -> Path | None:
    """The last checkpoint a search trial kept (``student.pt`` in Tune's trial folder)."""
    files = sorted(run_dir.glob(f"tune/run_trial_{trial_id}_*/checkpoint_*/student.pt"))
    return files[-1] if files else None


def warm_started(bench: Bench, teacher: Teacher, results: list[dict[str, Any]], budget: float,
                 seed: int) -> tuple[nn.Module, dict[str, Any]] | str:
    """e: d's best trial, trained on from its checkpoint for F epochs; or why it cannot run."""
    from prunetune.results.leaderboard import Leaderboard

    d = find(results, teacher.name, "d", budget, seed)
    if d is None:
        return f"e skipped for {teacher.name} {budget:.0%} seed {seed}: d has not run"
    checkpoint = trial_checkpoint(bench.args.out / "runs" / d["run_id"], d["best_trial"])
    rows = [r for r in Leaderboard(bench.args.out / "leaderboard").rows(run_id=d["run_id"])
            if r["trial_id"] == d["best_trial"]]
    if checkpoint is None or not rows:
        return f"e skipped for {teacher.name} {budget:.0%} seed {seed}: trial {d['best_trial']} left no checkpoint"
    start = time.perf_counter()
    student = compressed(bench, teacher, rows[0], seed, f"{d['run_id']}-warm", start_from=checkpoint)
    final_seconds = time.perf_counter() - start
    return student, {"run_id": d["run_id"], "best_trial": d["best_trial"], "plan": d["plan"],
                     "started_from": str(checkpoint), "search_seconds": d["search_seconds"],
                     "final_seconds": final_seconds, "wall_seconds": d["search_seconds"] + final_seconds}


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


def find(results: list[dict[str, Any]], teacher: str, method: str, budget: float, seed: int) -> dict[str, Any] | None:
    return next((r for r in results if (r["teacher"], r["method"], r["seed"]) == (teacher, method, seed)
                 and abs(r["budget"] - budget) < 1e-9), None)


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


def mean_of(results: list[dict[str, Any]], teacher: str, method: str, budget: float, key: str) -> float | None:
    values = [r[key] for r in results
              if (r["teacher"], r["method"]) == (teacher, method) and abs(r["budget"] - budget) < 1e-9]
    return statistics.mean(values) if values else None


# The accuracy targets: (budget, other, least d - other averaged over the teachers).
ACCURACY_TARGETS = ((0.25, "b", 0.5), (0.25, "c", 0.0), (0.25, "teacher", -0.3), (0.10, "b", 1.0))
# Its cost targets: (key, most d / b on every teacher and budget).
COST_TARGETS = (("latency_b256_ms", 1.0), ("wall_seconds", 3.0))


def accuracy_verdict(results: list[dict[str, Any]], teachers: dict[str, dict[str, Any]], budget: float,
                     other: str, least: float) -> str | None:
    """d's test accuracy minus ``other``'s (a method, or the teacher), averaged over teachers."""
    gaps = {}
    for name, row in teachers.items():
        d = mean_of(results, name, "d", budget, "test_accuracy")
        base = row["test_accuracy"] if other == "teacher" else mean_of(results, name, other, budget, "test_accuracy")
        if d is not None and base is not None:
            gaps[name] = d - base
    if not gaps:
        return None
    mean = statistics.mean(gaps.values())
    detail = ", ".join(f"{name} {gap:+.2f}" for name, gap in gaps.items())
    return (f"{budget:.0%} MACs: d - {other} = {mean:+.2f} pts averaged over {len(gaps)} teachers ({detail}); "
            f"target >= {least:+g}: {'met' if mean >= least else 'NOT met'}")


def cost_verdict(results: list[dict[str, Any]], teachers: Iterable[str], key: str, most: float,
                 threads: int) -> str | None:
    """The worst ratio of d's ``key`` to b's over teachers and budgets."""
    ratios = {}
    for name in teachers:
        for budget in sorted({r["budget"] for r in results}, reverse=True):
            d, b = (mean_of(results, name, m, budget, key) for m in "db")
            if d is not None and b is not None:
                ratios[name, budget] = d / b
    if not ratios:
        return None
    (name, budget), worst = max(ratios.items(), key=lambda item: item[1])
    cores = f" (measured on {threads} threads; the target is on 2)" if key == "wall_seconds" and threads != 2 else ""
    return (f"{key} d/b: worst {worst:.2f} ({name} {budget:.0%}), mean {statistics.mean(ratios.values()):.2f} over "
            f"{len(ratios)} teacher-budgets; target <= {most:g} on every one{cores}: "
            f"{'met' if worst <= most else 'NOT met'}")


def verdicts(results: list[dict[str, Any]], teachers: dict[str, dict[str, Any]], threads: int) -> list[str]:
    """The issue's targets, each with the numbers it rests on."""
    lines = [accuracy_verdict(results, teachers, budget, other, least) for budget, other, least in ACCURACY_TARGETS]
    lines += [cost_verdict(results, teachers, key, most, threads) for key, most in COST_TARGETS]
    missing = [t for t in TEACHERS if t not in teachers]
    if missing:
        lines.append(f"incomplete: the issue's verdict needs all four teachers; missing {', '.join(missing)}")
    return [line for line in lines if line]


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
