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

# Light (no torch): the defaults of the shared options come from it, so --help shows them.
from prunetune.jobspec import SCHEDULES, JobSpec

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # "prunetune: error:" as every other mistake, whichever subcommand's parser found it.
        self.exit(2, f"prunetune: error: {message} (see {self.prog} --help)\n")


def _kv(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=VALUE")
    return key, val


def _latency_cap(value: str) -> float | str:
    word = value.strip().lower()
    if word in ("uniform", "none"):
        return word
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds, uniform or none, got {value!r}") from None


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
        "pruning, kernel-size changes and knowledge distillation, searched per layer with Ray Tune "
        "and Optuna.",
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
    _add_job_arguments(c, f"peak SGD learning rate of distillation; fine-tuning uses a tenth (default: {JobSpec.lr})")
    c.add_argument("--ratio", type=float, default=None,
                   help="pruning ratio of every group, in [0, 1) (default: the plan file's, else 0.5)")
    c.add_argument("--layer-ratio", type=_kv, action="append", default=[], metavar="LAYER=RATIO",
                   help="ratio of the group of LAYER (repeatable; overrides --ratio)")
    c.add_argument("--kernel", type=_kv, action="append", default=[], metavar="LAYER=SIZE",
                   help="new odd kernel size of conv LAYER (repeatable)")
    c.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of this (e.g. 8)")
    c.add_argument("--macs-target", type=float, default=None, metavar="FRACTION",
                   help="global ranking: cut the lowest-ranked channels of all groups until MACs are at most this share (ratios are then ignored)")
    c.add_argument("--max-ratio", type=float, default=None, help="global ranking: no group loses more than this share (default: 0.9)")
    c.add_argument("--plan", default=None, metavar="JSON", help="a plan file: {ratio, ratios, kernels, round_to, macs_target, max_ratio}")
    c.add_argument("--from", dest="start_from", default=None, metavar="STUDENT",
                   help="train a saved student further instead of pruning the teacher: compress's or search's "
                   "output, or a search trial's checkpoint (its plan is kept; give no plan options)")
    c.add_argument("--epochs", type=int, default=3, help="distillation epochs (default: 3)")
    # CompressSpec's default; compress imports torch, which --help must not.
    c.add_argument("--finetune-epochs", type=int, default=0, help="cross-entropy fine-tuning epochs after distillation (default: 0)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    c.add_argument("--out", default="student.pt", help="where to write the student (default: student.pt)")
    _add_component_options(c, ("model", "dataset", "scorer", "pruner", "distiller"))

    _add_search_parser(sub)
    _add_leaderboard_parser(sub)
    _add_rerun_parser(sub)

    e = sub.add_parser("evaluate", help="reload a student and measure it on its test split")
    e.add_argument("checkpoint", help="a student file written by compress or search")
    e.add_argument("--model", default=None, metavar="PACKAGE.MODULE:FACTORY",
                   help="the factory of a student built from one: a file never makes prunetune import code")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    return parser


def _add_job_arguments(p: argparse.ArgumentParser, lr_help: str) -> None:
    """The options compress and search share (:class:`prunetune.jobspec.JobSpec`)."""
    p.add_argument("--model", default=None, help="zoo model name or package.module:factory (default: resnet)")
    p.add_argument("--dataset", default="fashion_mnist_demo", help="dataset plugin (default: fashion_mnist_demo, bundled)")
    p.add_argument("--scorer", default="l1", help="which channels matter (default: l1)")
    p.add_argument("--pruner", default="channel", help="how to cut (default: channel)")
    p.add_argument("--distiller", default="hinton", help="how to teach (default: hinton)")
    p.add_argument("--teacher-epochs", type=int, default=15, help="epochs to train the teacher when no checkpoint is given (default: 15)")
    p.add_argument("--teacher-lr", type=float, default=0.1, help="the teacher's peak SGD learning rate (default: 0.1)")
    p.add_argument("--teacher-checkpoint", default=None, metavar="PATH", help="the teacher's state_dict")
    p.add_argument("--batch-size", type=int, default=JobSpec.batch_size,
                   help=f"of every training stage, the teacher's too (default: {JobSpec.batch_size})")
    p.add_argument("--lr", type=float, default=JobSpec.lr, help=lr_help)

    p.add_argument("--schedule", choices=SCHEDULES, default=JobSpec.schedule,
                   help=f"learning-rate schedule of the students' training stages; onecycle warms up to --lr, "
                   f"then anneals (default: {JobSpec.schedule})")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=JobSpec.nesterov,
                   help=f"Nesterov momentum in the students' SGD (default: {'on' if JobSpec.nesterov else 'off'})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of training data held out for validation (default: 0.1)")
    p.add_argument("--quiet", action="store_true", help="no progress output (there is none when stderr is not a terminal)")


def _add_search_parser(sub: Any) -> None:
    s = sub.add_parser(
        "search",
        help="search per-layer ratios and kernel sizes with Ray Tune + Optuna; keep the best student",
        description="Every trial builds a student from a sampled plan, distils it for --epochs and "
        "reports validation accuracy; the best feasible trial is distilled again for --final-epochs, "
        "measured once on the test split and saved as best_student.pt in the run folder.",
    )
    s.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted search in RUN_DIR (other options are taken from it)")
    _add_job_arguments(s, f"peak SGD learning rate of every trial's and the kept student's distillation (default: {JobSpec.lr})")
    s.add_argument("--space", default="per_layer", help="search space (default: per_layer; uniform is the standard recipe)")
    s.add_argument("--strategy", default="optuna", help="search strategy: optuna (--strategy-opt sampler=tpe|nsga2|random) or structure_diversity "
                   "(greedy kernel sizes layer by layer; --strategy-opt layers=a,b kernel_sizes=3,5,7 stop_early=false)")
    s.add_argument("--max-macs", type=float, default=None, metavar="FRACTION",
                   help="MACs budget relative to the teacher, e.g. 0.25; over-budget plans are repaired before training")
    s.add_argument("--max-latency", type=_latency_cap, default=None, metavar="MS|uniform|none",
                   help="latency budget: milliseconds per batch of --latency-batch on --latency-threads, predicted by "
                   "a per-layer table timed once per machine; over-budget plans are repaired like over-MACs ones. "
                   "uniform (the default with --max-macs): never slower than the uniform student of the MACs budget, "
                   "also checked by timing before final training; none: no latency cap, accuracy alone")
    s.add_argument("--latency-batch", type=int, default=256, help="images per batch of --max-latency and of trials' latency (default: 256)")
    s.add_argument("--latency-threads", type=int, default=None,
                   help="torch threads latency is timed with (default: this process's, torch.get_num_threads())")
    s.add_argument("--max-ratio", type=float, default=0.9, help="no group is cut by more than this (default: 0.9)")
    s.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of this")
    s.add_argument("--objectives", default="accuracy", help="accuracy, or accuracy plus any of macs, params, latency (as --max-latency predicts it) for a Pareto search (default: accuracy)")
    s.add_argument("--num-samples", type=int, default=12, help="trials (default: 12)")
    s.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: as many as the cluster's CPUs, or GPUs, hold)")
    s.add_argument("--cpus-per-trial", type=float, default=1.0)
    s.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions allowed, e.g. 0.5")
    s.add_argument("--scheduler", default="fifo", choices=("fifo", "asha"), help="asha stops bad trials early")
    s.add_argument("--address", default=None, help="an existing Ray cluster (default: an embedded local Ray)")
    s.add_argument("--storage", default=None, help="where Tune keeps the experiment: a folder or a URI such as s3://bucket/path (default: the run folder)")
    s.add_argument("--epochs", type=int, default=2, help="distillation epochs per trial (default: 2)")
    s.add_argument("--final-epochs", type=int, default=5, help="distillation epochs of the kept student (default: 5)")
    s.add_argument("--runs", default="runs", help="folder of run folders (default: runs)")
    s.add_argument("--name", default=None, help="the run id (default: model-dataset-time)")
    s.add_argument("--leaderboard", default="leaderboard", help="the Parquet leaderboard folder (default: leaderboard)")
    s.add_argument("--screen", type=int, default=0, metavar="N",
                   help="screen N random plans with the adaptive-BN proxy before the trials; the best ones are "
                   "tried first (needs --max-macs; default: 0, off)")
    _add_component_options(s, ("model", "dataset", "space", "strategy", "scorer", "pruner", "distiller"))


def _add_rerun_parser(sub: Any) -> None:
    r = sub.add_parser(
        "rerun",
        help="train one search trial again from its leaderboard row and check its validation accuracy",
        description="Rebuilds the trial's student from its row's parameters and the run's search.json "
        "(the teacher from the cache), distils it in this process as the trial did, and prints the row "
        "against the rerun. Exit 0 when the validation accuracies agree within --tolerance, 1 when not. "
        "Nothing is written.",
    )
    r.add_argument("run_id", metavar="RUN_ID", help="the run, a folder in --runs")
    r.add_argument("trial_id", metavar="TRIAL_ID", help="the trial's id on the leaderboard")
    r.add_argument("--leaderboard", default=None, metavar="DIR", help="the leaderboard folder (default: the run's)")
    r.add_argument("--runs", default="runs", metavar="DIR", help="folder of run folders (default: runs)")
    r.add_argument("--model", default=None, metavar="PACKAGE.MODULE:FACTORY",
                   help="the run's model, when it is a factory: a run folder never makes prunetune import code")
    r.add_argument("--tolerance", type=float, default=None, metavar="PTS",
                   help="accuracy points the rerun may differ by (default: 0, exact, for a trial trained on the "
                   "CPU; 1 for one trained on a GPU, which a machine without one reruns only when this is given)")


def _add_leaderboard_parser(sub: Any) -> None:
    lb = sub.add_parser("leaderboard", help="show, filter, compare and check the Parquet leaderboard")
    lb.add_argument(
        "action", choices=("show", "pareto", "compare", "check"),
        help="check: list the files that reading skips (not Parquet, truncated, another schema); exit 1 if any",
    )
    lb.add_argument("runs", nargs="*", metavar="RUN", help="compare: two run ids; show/pareto: optional run ids")
    lb.add_argument("--dir", default="leaderboard", help="the leaderboard folder (default: leaderboard)")
    lb.add_argument("--model", default=None)
    lb.add_argument("--dataset", default=None)
    lb.add_argument("--format", default="table", choices=("table", "csv", "json"))


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
        macs_target=args.macs_target if args.macs_target is not None else plan.macs_target,
        max_ratio=args.max_ratio if args.max_ratio is not None else plan.max_ratio,
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


def _job_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings compress and search share (:class:`prunetune.jobspec.JobSpec`)."""
    from prunetune.options import parse_options

    return dict(
        model=args.model or "resnet", dataset=args.dataset, scorer=args.scorer, pruner=args.pruner, distiller=args.distiller,
        model_options=parse_options(args.model_opt, "model"),
        dataset_options=parse_options(args.dataset_opt, "dataset"),
        scorer_options=parse_options(args.scorer_opt, "scorer"),
        pruner_options=parse_options(args.pruner_opt, "pruner"),
        distiller_options=parse_options(args.distiller_opt, "distiller"),
        teacher_epochs=args.teacher_epochs, teacher_lr=args.teacher_lr, teacher_checkpoint=args.teacher_checkpoint,
        batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, nesterov=args.nesterov,
        seed=args.seed, val_fraction=args.val_fraction,
        progress=not args.quiet and sys.stderr.isatty(),
    )


def _cmd_compress(args: argparse.Namespace) -> int:
    from prunetune.compress import CompressSpec, run_compress
    from prunetune.report import side_by_side

    spec = CompressSpec(
        **_job_settings(args), plan=_plan_from_args(args), epochs=args.epochs,
        finetune_epochs=args.finetune_epochs, device=args.device, out=args.out, start_from=args.start_from,
    )
    result = run_compress(spec)
    print(side_by_side(result.teacher, result.student))
    print(f"student validation accuracy: {result.student_val_accuracy:.2f}%")
    print(f"student written to {args.out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from prunetune.evaluate import evaluate_checkpoint
    from prunetune.report import format_table

    saved, now = evaluate_checkpoint(args.checkpoint, device=args.device, model=args.model)
    rows = [
        ("test accuracy (%)", f"{saved['accuracy']:.2f}", f"{now['accuracy']:.2f}"),
        ("MACs", f"{saved['macs']:,}", f"{now['macs']:,}"),
        ("params", f"{saved['params']:,}", f"{now['params']:,}"),
    ]
    print(format_table(("", "when saved", "now"), rows))
    return 0


def _search_spec(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from prunetune.errors import UsageError
    from prunetune.options import parse_options
    from prunetune.search import SPEC_FILE, SearchSpec

    if args.resume:
        from prunetune.models import check_model_named

        path = Path(args.resume) / SPEC_FILE
        if not path.is_file():
            raise UsageError(f"{args.resume!r} is not a run folder (it has no {SPEC_FILE})")
        spec = SearchSpec.from_json(path.read_text(errors="replace"), source=str(path))
        check_model_named(spec.model, args.model, f"run {args.resume!r}")
        return spec
    return SearchSpec(
        **_job_settings(args), space=args.space, strategy=args.strategy,
        space_options=parse_options(args.space_opt, "search space"),
        strategy_options=parse_options(args.strategy_opt, "strategy"),
        max_macs=args.max_macs, max_latency=args.max_latency, latency_batch=args.latency_batch,
        latency_threads=args.latency_threads, max_ratio=args.max_ratio, round_to=args.round_to,
        objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
        num_samples=args.num_samples, max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, scheduler=args.scheduler,
        address=args.address, storage=args.storage, epochs=args.epochs, final_epochs=args.final_epochs,
        run_root=args.runs, name=args.name, leaderboard=args.leaderboard, screen=args.screen,
    )


def _cmd_search(args: argparse.Namespace) -> int:
    from prunetune.search import run_search

    spec = _search_spec(args)
    if args.resume and args.address:
        import dataclasses

        spec = dataclasses.replace(spec, address=args.address)
    result = run_search(spec, resume=args.resume)
    if not result["students"]:
        print(f"prunetune: error: the search kept no student (see {result['run_dir']}/summary.txt "
              "and the leaderboard's error column)", file=sys.stderr)
        return 1
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunetune.errors import UsageError
    from prunetune.leaderboard import Leaderboard, compare_runs, format_rows, pareto_front, require_run

    folder = Path(args.dir)
    if not folder.exists():
        raise UsageError(f"leaderboard folder {args.dir!r} does not exist")
    if not folder.is_dir():
        raise UsageError(f"leaderboard folder {args.dir!r} is not a folder")
    board = Leaderboard(folder)
    if args.action == "check":
        bad = board.check()
        for path, reason in bad:
            print(f"{path}: {reason}")
        print(f"{len(board.files()) - len(bad)} good file(s), {len(bad)} bad file(s)")
        return 1 if bad else 0
    if args.action == "compare":
        if len(args.runs) != 2:
            raise UsageError("leaderboard compare takes two run ids")
        for run in args.runs:
            require_run(board, run)
        print(compare_runs(board.rows(run_id=args.runs[0]), board.rows(run_id=args.runs[1])))
        return 0
    for run in args.runs:
        require_run(board, run)
    rows = [r for r in board.rows(model=args.model, dataset=args.dataset) if not args.runs or r["run_id"] in args.runs]
    if args.action == "pareto":
        trials = [r for r in rows if r["kind"] == "trial" and r["status"] == "ok"]
        rows = pareto_front(trials, maximize="val_accuracy", minimize="macs")
    print(format_rows(rows, args.format))
    return 0


def _cmd_rerun(args: argparse.Namespace) -> int:
    from prunetune.rerun import rerun_trial

    result = rerun_trial(args.run_id, args.trial_id, runs=args.runs, leaderboard=args.leaderboard,
                         model=args.model, tolerance=args.tolerance)
    print(result.report())
    return 0 if result.reproduced else 1


def _one_line(exc: Exception) -> str:
    # A message that quotes another library's (an import error, say) may span lines.
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _first_line(message: Warning | str) -> str:
    text = str(message).strip()
    return text.splitlines()[0] if text else type(message).__name__


_COMMANDS = {
    "plugins": _cmd_plugins,
    "compress": _cmd_compress,
    "evaluate": _cmd_evaluate,
    "search": _cmd_search,
    "leaderboard": _cmd_leaderboard,
    "rerun": _cmd_rerun,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prunetune`` command line; returns the exit code."""
    args = _build_parser().parse_args(argv)
    import warnings

    from prunetune.errors import TrainingDiverged, UsageError

    try:
        # Library warnings wait until the command ends: a mistake stays one line.
        with warnings.catch_warnings(record=True) as caught:
            code = _COMMANDS[args.command](args)
        for line in dict.fromkeys(_first_line(w.message) for w in caught):
            print(f"prunetune: warning: {line}", file=sys.stderr)
        return code
    except UsageError as exc:
        print(f"prunetune: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"prunetune: error: training diverged: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prunetune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # A reader such as `head` closed the pipe: not an error of ours or the user's.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
