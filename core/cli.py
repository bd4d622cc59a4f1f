"""The ``prunetune`` command line.

Heavy modules (torch, the plugins) are imported inside the commands, so ``prunetune --help``
stays fast. Every user mistake ends as one ``prunetune: error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split()[0]} --help)\n")


def _kv(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=VALUE")
    return key, val


def _add_component_options(parser: argparse.ArgumentParser, kinds: Sequence[str]) -> None:
    for kind in kinds:
        parser.add_argument(
            f"--{kind}-opt", action="append", default=[], metavar="KEY=VALUE",
            help=f"an option of the {kind} (repeatable; `prunetune plugins` lists the components)",
        )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prunetune",
        description="Compress a trained CNN into a smaller, faster student: structured channel "
        "pruning, kernel-size changes and knowledge distillation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    sub.add_parser("plugins", help="list every component: kind, name, origin, description")

    c = sub.add_parser(
        "compress",
        help="prune, distil and fine-tune one student; print it beside the teacher; save it",
        description="Teacher (checkpoint, cache, or trained once) -> kernel changes -> pruning "
        "-> distillation -> fine-tuning -> measurement on the test split.",
    )
    c.add_argument("--model", default="resnet", help="zoo model name or package.module:factory (default: resnet)")
    c.add_argument("--dataset", default="fashion_mnist_demo", help="dataset plugin (default: fashion_mnist_demo, bundled)")
    c.add_argument("--scorer", default="l1", help="which channels matter (default: l1)")
    c.add_argument("--pruner", default="channel", help="how to cut (default: channel)")
    c.add_argument("--distiller", default="hinton", help="how to teach (default: hinton)")
    c.add_argument("--ratio", type=float, default=None,
                   help="pruning ratio of every group, in [0, 1) (default: the plan file's, else 0.5)")
    c.add_argument("--layer-ratio", type=_kv, action="append", default=[], metavar="LAYER=RATIO",
                   help="ratio of the group of LAYER (repeatable; overrides --ratio)")
    c.add_argument("--kernel", type=_kv, action="append", default=[], metavar="LAYER=SIZE",
                   help="new odd kernel size of conv LAYER (repeatable)")
    c.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of this (e.g. 8)")
    c.add_argument("--plan", default=None, metavar="JSON", help="a plan file: {ratio, ratios, kernels, round_to}")
    c.add_argument("--epochs", type=int, default=3, help="distillation epochs (default: 3)")
    c.add_argument("--finetune-epochs", type=int, default=1, help="cross-entropy fine-tuning epochs after distillation (default: 1)")
    c.add_argument("--teacher-epochs", type=int, default=15, help="epochs to train the teacher when no checkpoint is given (default: 15)")
    c.add_argument("--teacher-lr", type=float, default=0.1, help="the teacher's peak SGD learning rate (default: 0.1)")
    c.add_argument("--teacher-checkpoint", default=None, metavar="PATH", help="the teacher's state_dict")
    c.add_argument("--batch-size", type=int, default=64, help="of every training stage (default: 64)")
    c.add_argument("--lr", type=float, default=0.02, help="peak SGD learning rate of distillation; fine-tuning uses a tenth (default: 0.02)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--val-fraction", type=float, default=0.1, help="share of training data held out for validation")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    c.add_argument("--out", default="student.pt", help="where to write the student (default: student.pt)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_component_options(c, ("model", "dataset", "scorer", "pruner", "distiller"))

    e = sub.add_parser("evaluate", help="reload a student and measure it on its test split")
    e.add_argument("checkpoint", help="a student file written by compress")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    return parser


def _plan_from_args(args: argparse.Namespace) -> Any:
    from prunetune.errors import UsageError
    from prunetune.plan import StudentPlan

    base: dict[str, Any] = {}
    if args.plan is not None:
        try:
            with open(args.plan, encoding="utf-8") as f:
                base = json.load(f)
        except FileNotFoundError:
            raise UsageError(f"plan file {args.plan!r} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"plan file {args.plan!r} is not JSON: {exc}") from None
        if not isinstance(base, dict):
            raise UsageError(f"plan file {args.plan!r} must hold a JSON object")
    plan = StudentPlan.from_dict(base) if base else StudentPlan(ratio=0.5)

    def number(kind: type, text: str, what: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise UsageError(f"{what} {text!r} is not a number") from None

    ratios = dict(plan.ratios) | {k: number(float, v, f"ratio of {k}") for k, v in args.layer_ratio}
    kernels = dict(plan.kernels) | {k: number(int, v, f"kernel size of {k}") for k, v in args.kernel}
    return StudentPlan(
        ratio=plan.ratio if args.ratio is None else args.ratio,
        ratios=ratios,
        kernels=kernels,
        round_to=args.round_to if args.round_to is not None else plan.round_to,
    )


def _cmd_plugins(args: argparse.Namespace) -> int:
    from prunetune.host import Host
    from prunetune.report import format_table

    registry = Host.create().registry
    rows = [
        (c.kind.replace("_", " "), c.name, f"{c.distribution} {c.version}".strip(), c.description)
        for c in registry
    ]
    print(format_table(("kind", "name", "from", "description"), rows))
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    from prunetune.compress import CompressSpec, run_compress
    from prunetune.options import parse_options
    from prunetune.report import side_by_side

    spec = CompressSpec(
        model=args.model, dataset=args.dataset, scorer=args.scorer, pruner=args.pruner,
        distiller=args.distiller, plan=_plan_from_args(args),
        model_options=parse_options(args.model_opt, "model"),
        dataset_options=parse_options(args.dataset_opt, "dataset"),
        scorer_options=parse_options(args.scorer_opt, "scorer"),
        pruner_options=parse_options(args.pruner_opt, "pruner"),
        distiller_options=parse_options(args.distiller_opt, "distiller"),
        epochs=args.epochs, finetune_epochs=args.finetune_epochs, teacher_epochs=args.teacher_epochs,
        teacher_lr=args.teacher_lr, teacher_checkpoint=args.teacher_checkpoint, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, val_fraction=args.val_fraction, device=args.device, out=args.out,
        progress=not args.quiet,
    )
    result = run_compress(spec)
    print(side_by_side(result.teacher, result.student))
    print(f"student validation accuracy: {result.student_val_accuracy:.2f}%")
    print(f"student written to {args.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from prunetune.evaluate import evaluate_checkpoint
    from prunetune.report import format_table

    saved, now = evaluate_checkpoint(args.checkpoint, device=args.device)
    rows = [
        ("test accuracy (%)", f"{saved['accuracy']:.2f}", f"{now['accuracy']:.2f}"),
        ("MACs", f"{saved['macs']:,}", f"{now['macs']:,}"),
        ("params", f"{saved['params']:,}", f"{now['params']:,}"),
    ]
    print(format_table(("", "when saved", "now"), rows))
    return 0


_COMMANDS = {"plugins": _cmd_plugins, "compress": _cmd_compress, "evaluate": _cmd_evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prunetune`` command line; returns the exit code."""
    args = _build_parser().parse_args(argv)
    from prunetune.errors import UsageError

    try:
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"prunetune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunetune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
