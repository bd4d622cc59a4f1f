"""Is prunetune's uniform student as good as Torch-Pruning's, trained alike? (issue 10)

In ``benchmarks/quality.py`` the searches kept the uniform plan, and its student (``l1``
scorer, ``channel`` pruner, trained by ``compress``) ended below Torch-Pruning's uniform
student with KD (method b). Two things differ: the student (which channels go, and how many
groups are cut) and the training loop. For each teacher, this script builds at one MACs budget:

- ``tp``: Torch-Pruning's ``MetaPruner`` with ``GroupMagnitudeImportance(p=2)``, one ratio
  bisected to the budget (quality.py's a/b student);
- ``l1``: prunetune's uniform plan (the smallest single ratio meeting the budget), ``l1``;
- ``l2-inputs``: the same plan with ``l2`` and ``include_inputs=true`` (closest to
  ``GroupMagnitudeImportance``, which also counts the consumers' input weights);

and trains each for F epochs with quality.py's KD loop (``tp_train``: one cycle, Nesterov,
alpha 0.5, T 4), and the ``l1`` student also with prunetune's own ``distill`` and the same
recipe (``l1/distill``). Test accuracy on the full test split; seed 0.

Usage: .venv/bin/python benchmarks/uniform_students.py [--teachers resnet,mobilenet] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks.mixnet:mixnet
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from quality import TPRecipe, default_data, fixed_teacher, logits_of, tp_student, tp_train  # noqa: E402
from recipe import student as uniform_student  # noqa: E402

from prunetune.host.manager import Host  # noqa: E402
from prunetune.jobs.spec import JobSpec  # noqa: E402
from prunetune.structure.measure import count_macs_params  # noqa: E402
from prunetune.training.loop import evaluate  # noqa: E402
from prunetune.training.recipe import TrainRecipe  # noqa: E402
from prunetune.training.train import distill  # noqa: E402

CPU = torch.device("cpu")
STUDENTS = ("tp", "l1", "l2-inputs", "l1/distill")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--limit", type=int, default=None, help="images per split (smoke runs)")
    parser.add_argument("--teachers", default="resnet,mobilenet")
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=2, help="F")
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    registry = Host.create().registry
    data = registry.create("dataset", "idx", {"path": args.data, "limit": args.limit}).load(0, 0.1)
    recipe = TPRecipe()
    rows = []
    for name in args.teachers.split(","):
        teacher, _, source = fixed_teacher(registry, data, args.teacher_epochs, args.out, name)
        teacher_acc = evaluate(teacher, data.test_x, data.test_y, CPU)[0]
        print(f"{name}: {source}, {teacher_acc:.2f}% test", flush=True)
        macs = count_macs_params(teacher, data.input_shape)[0]
        budget = int(args.budget * macs)
        logits = logits_of(teacher, data.train_x)
        steps = args.epochs * (len(data.train_x) // recipe.batch_size)
        for kind in STUDENTS:
            start = time.perf_counter()
            if kind == "tp":
                student, _ = tp_student(teacher, budget, data.train_x[:1], data.num_classes)
            elif kind == "l2-inputs":
                student = uniform_student(registry, teacher, data, args.budget, 0, "l2", {"include_inputs": True})
            else:
                student = uniform_student(registry, teacher, data, args.budget, 0)
            if kind == "l1/distill":
                train = TrainRecipe(epochs=args.epochs, batch_size=JobSpec.batch_size, lr=JobSpec.lr, seed=0,
                                    schedule=JobSpec.schedule, nesterov=JobSpec.nesterov)
                distill(student, teacher, registry.create("distiller", "hinton"), data.train_x, data.train_y, train,
                        CPU, teacher_logits=logits, progress=False)
            else:
                tp_train(student, data.train_x, data.train_y, recipe, steps, 0, logits)
            accuracy = evaluate(student, data.test_x, data.test_y, CPU)[0]
            m, p = count_macs_params(student, data.input_shape)
            rows.append({"teacher": name, "student": kind, "test_accuracy": accuracy, "macs_fraction": m / macs,
                         "params": p, "seconds": time.perf_counter() - start, "teacher_accuracy": teacher_acc})
            print(f"  {kind}: {accuracy:.2f}% test, {100 * m / macs:.1f}% MACs, {p} params "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            (args.out / "uniform_students.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                                          "rows": rows}, indent=1))
    print(f"\nmachine: {platform.machine()}, {args.threads} threads, torch {torch.__version__}; "
          f"{len(data.train_x)} train / {len(data.test_x)} test; budget {args.budget:.0%} MACs, F={args.epochs}")


if __name__ == "__main__":
    main()
