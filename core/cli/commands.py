"""What each ``prunetune`` command does with its parsed arguments. Heavy modules (torch, the
plugins) are imported inside the commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["COMMANDS"]


def _plan_from_args(args: argparse.Namespace) -> Any:
    from prunetune.errors import UsageError
    from prunetune.structure.plan import StudentPlan

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


def cmd_plugins(args: argparse.Namespace) -> int:
    from prunetune.host.manager import Host
    from prunetune.results.report import format_table

    registry = Host.create().registry
    rows = [
        (c.kind.replace("_", " "), c.name, f"{c.distribution} {c.version}".strip(), c.description)
        for c in registry
    ]
    print(format_table(("kind", "name", "from", "description"), rows))
    return 0


def _job_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings compress and search share (:class:`prunetune.jobs.spec.JobSpec`)."""
    from prunetune.host.options import parse_options

    return dict(
        model=args.model or "resnet", dataset=args.dataset, scorer=args.scorer, pruner=args.pruner, distiller=args.distiller,
        model_options=parse_options(args.model_opt, "model"), logits=args.logits, classifier=args.classifier,
        dataset_options=parse_options(args.dataset_opt, "dataset"),
        scorer_options=parse_options(args.scorer_opt, "scorer"),
        pruner_options=parse_options(args.pruner_opt, "pruner"),
        distiller_options=parse_options(args.distiller_opt, "distiller"),
        teacher_epochs=args.teacher_epochs, teacher_lr=args.teacher_lr, teacher_checkpoint=args.teacher_checkpoint,
        batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, nesterov=args.nesterov,
        seed=args.seed, val_fraction=args.val_fraction,
        progress=not args.quiet and sys.stderr.isatty(),
    )


def cmd_compress(args: argparse.Namespace) -> int:
    from prunetune.jobs.compress import run_compress
    from prunetune.jobs.spec import CompressSpec
    from prunetune.results.report import side_by_side

    spec = CompressSpec(
        **_job_settings(args), plan=_plan_from_args(args), epochs=args.epochs,
        finetune_epochs=args.finetune_epochs, device=args.device, out=args.out, start_from=args.start_from,
    )
    result = run_compress(spec)
    print(side_by_side(result.teacher, result.student))
    print(f"student validation accuracy: {result.student_val_accuracy:.2f}%")
    print(f"student written to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from prunetune.jobs.evaluate import evaluate_checkpoint
    from prunetune.results.report import format_table

    saved, now = evaluate_checkpoint(args.checkpoint, device=args.device, model=args.model)
    rows = [
        ("test accuracy (%)", f"{saved['accuracy']:.2f}", f"{now['accuracy']:.2f}"),
        ("MACs", f"{saved['macs']:,}", f"{now['macs']:,}"),
        ("params", f"{saved['params']:,}", f"{now['params']:,}"),
    ]
    print(format_table(("", "when saved", "now"), rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from prunetune.jobs.export import export_student

    done = export_student(args.checkpoint, args.format, out=args.out, model=args.model)
    print(f"wrote {done['path']} ({done['format']}): its logits differ from the student's by at most "
          f"{done['max_abs_diff']:.1e}")
    return 0


def _search_spec(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from prunetune.errors import UsageError
    from prunetune.host.options import parse_options
    from prunetune.searching.spec import SPEC_FILE, SearchSpec

    if args.resume:
        from prunetune.components.models import check_model_named

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


def cmd_search(args: argparse.Namespace) -> int:
    from prunetune.searching.run import run_search

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


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prunetune.errors import UsageError
    from prunetune.results.leaderboard import Leaderboard, require_run
    from prunetune.results.rows import format_rows
    from prunetune.results.summary import compare_runs, pareto_front

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


def cmd_rerun(args: argparse.Namespace) -> int:
    from prunetune.searching.rerun import rerun_trial

    result = rerun_trial(args.run_id, args.trial_id, runs=args.runs, leaderboard=args.leaderboard,
                         model=args.model, tolerance=args.tolerance)
    print(result.report())
    return 0 if result.reproduced else 1


COMMANDS = {
    "plugins": cmd_plugins,
    "compress": cmd_compress,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "search": cmd_search,
    "leaderboard": cmd_leaderboard,
    "rerun": cmd_rerun,
}
