"""The ``prunetune`` command line's arguments: one parser per command, the shared job options
with their defaults read from the specs (imported without torch, so ``--help`` stays fast)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from prunetune.jobs.spec import CompressSpec, JobSpec
from prunetune.searching.spec import SCHEDULERS, SearchSpec
from prunetune.structure.plan import MAX_RATIO, SAMPLED_MAX_RATIO
from prunetune.training.recipe import SCHEDULES

__all__ = ["build_parser"]


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


#: ``prunetune export --format``: the keys of :data:`prunetune.jobs.export.FORMATS` (which imports torch).
EXPORT_FORMATS = ("onnx", "torchscript", "exported-program")


def build_parser() -> argparse.ArgumentParser:
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
    c.add_argument("--max-ratio", type=float, default=None, help=f"global ranking: no group loses more than this share (default: {MAX_RATIO})")
    c.add_argument("--plan", default=None, metavar="JSON", help="a plan file: {ratio, ratios, kernels, round_to, macs_target, max_ratio}")
    c.add_argument("--from", dest="start_from", default=None, metavar="STUDENT",
                   help="train a saved student further instead of pruning the teacher: compress's or search's "
                   "output, or a search trial's checkpoint (its plan is kept; give no plan options)")
    c.add_argument("--epochs", type=int, default=CompressSpec.epochs, help=f"distillation epochs (default: {CompressSpec.epochs})")
    c.add_argument("--finetune-epochs", type=int, default=CompressSpec.finetune_epochs,
                   help=f"cross-entropy fine-tuning epochs after distillation (default: {CompressSpec.finetune_epochs})")
    c.add_argument("--device", default=CompressSpec.device, help=f"auto, cpu, cuda or cuda:N (default: {CompressSpec.device})")
    c.add_argument("--out", default=CompressSpec.out, help=f"where to write the student (default: {CompressSpec.out})")
    _add_component_options(c, ("model", "dataset", "scorer", "pruner", "distiller"))

    _add_search_parser(sub)
    _add_leaderboard_parser(sub)
    _add_rerun_parser(sub)

    e = sub.add_parser("evaluate", help="reload a student and measure it on its test split")
    e.add_argument("checkpoint", help="a student file written by compress or search")
    e.add_argument("--model", default=None, metavar="PACKAGE.MODULE:FACTORY",
                   help="the factory of a student built from one: a file never makes prunetune import code")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")

    x = sub.add_parser("export", help="export a student as ONNX, TorchScript or a torch.export program, "
                       "checked against it to 1e-4")
    x.add_argument("checkpoint", help="a student file written by compress or search")
    x.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                   help="onnx (needs pip install 'prunetune[onnx]'), torchscript (a traced module) or "
                   "exported-program (torch.export, a .pt2 file)")
    x.add_argument("--out", default=None, metavar="PATH", help="where to write it (default: beside the student, "
                   "with .onnx, .ts.pt or .pt2)")
    x.add_argument("--model", default=None, metavar="PACKAGE.MODULE:FACTORY",
                   help="the factory of a student built from one: a file never makes prunetune import code")
    return parser


def _output_key(text: str) -> int | str:
    """``--logits``: a tuple index (an integer) or the name of a named tuple's field or dict's key."""
    return int(text) if text.lstrip("-").isdigit() else text


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of layer names."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected one or more layer names, comma-separated")
    return names


def _add_job_arguments(p: argparse.ArgumentParser, lr_help: str) -> None:
    """The options compress and search share (:class:`prunetune.jobs.spec.JobSpec`)."""
    p.add_argument("--model", default=None, help=f"zoo model name, torchvision:NAME, timm:NAME or package.module:factory "
                   f"(default: {JobSpec.model})")
    p.add_argument("--logits", type=_output_key, default=None, metavar="INDEX|NAME",
                   help="for a model returning several outputs: which one is the logits (a tuple index, or a name)")
    p.add_argument("--classifier", type=_names, default=(), metavar="LAYER[,LAYER]",
                   help="layers whose outputs are model outputs, never cut (those feeding an output directly "
                   "are found without it)")
    p.add_argument("--dataset", default=JobSpec.dataset, help=f"dataset plugin (default: {JobSpec.dataset}, bundled)")
    p.add_argument("--scorer", default=JobSpec.scorer, help=f"which channels matter (default: {JobSpec.scorer})")
    p.add_argument("--pruner", default=JobSpec.pruner, help=f"how to cut (default: {JobSpec.pruner})")
    p.add_argument("--distiller", default=JobSpec.distiller, help=f"how to teach (default: {JobSpec.distiller})")
    p.add_argument("--teacher-epochs", type=int, default=JobSpec.teacher_epochs,
                   help=f"epochs to train the teacher when no checkpoint is given (default: {JobSpec.teacher_epochs})")
    p.add_argument("--teacher-lr", type=float, default=JobSpec.teacher_lr,
                   help=f"the teacher's peak SGD learning rate (default: {JobSpec.teacher_lr})")
    p.add_argument("--teacher-checkpoint", default=None, metavar="PATH", help="the teacher's state_dict")
    p.add_argument("--batch-size", type=int, default=JobSpec.batch_size,
                   help=f"of every training stage, the teacher's too (default: {JobSpec.batch_size})")
    p.add_argument("--lr", type=float, default=JobSpec.lr, help=lr_help)

    p.add_argument("--schedule", choices=SCHEDULES, default=JobSpec.schedule,
                   help=f"learning-rate schedule of the students' training stages; onecycle warms up to --lr, "
                   f"then anneals (default: {JobSpec.schedule})")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=JobSpec.nesterov,
                   help=f"Nesterov momentum in the students' SGD (default: {'on' if JobSpec.nesterov else 'off'})")
    p.add_argument("--seed", type=int, default=JobSpec.seed)
    p.add_argument("--val-fraction", type=float, default=JobSpec.val_fraction,
                   help=f"share of training data held out for validation (default: {JobSpec.val_fraction})")
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
    s.add_argument("--space", default=SearchSpec.space, help=f"search space (default: {SearchSpec.space}; uniform is the standard recipe)")
    s.add_argument("--strategy", default=SearchSpec.strategy, help="search strategy: optuna (--strategy-opt sampler=tpe|nsga2|random) or structure_diversity "
                   "(greedy kernel sizes layer by layer; --strategy-opt layers=a,b kernel_sizes=3,5,7 stop_early=false)")
    s.add_argument("--max-macs", type=float, default=None, metavar="FRACTION",
                   help="MACs budget relative to the teacher, e.g. 0.25; over-budget plans are repaired before training")
    s.add_argument("--max-latency", type=_latency_cap, default=None, metavar="MS|uniform|none",
                   help="latency budget: milliseconds per batch of --latency-batch on --latency-threads, predicted by "
                   "a per-layer table timed once per machine; over-budget plans are repaired like over-MACs ones. "
                   "uniform (the default with --max-macs): never slower than the uniform student of the MACs budget, "
                   "also checked by timing before final training; none: no latency cap, accuracy alone")
    s.add_argument("--latency-batch", type=int, default=SearchSpec.latency_batch,
                   help=f"images per batch of --max-latency and of trials' latency (default: {SearchSpec.latency_batch})")
    s.add_argument("--latency-threads", type=int, default=None,
                   help="torch threads latency is timed with (default: this process's, torch.get_num_threads())")
    s.add_argument("--max-ratio", type=float, default=SearchSpec.max_ratio,
                   help=f"no group is cut by more than this, the budget repair included (default: {SearchSpec.max_ratio}; "
                        f"the spaces sample up to their max_ratio option, default {SAMPLED_MAX_RATIO})")
    s.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of this")
    s.add_argument("--objectives", default="accuracy", help="accuracy, or accuracy plus any of macs, params, latency (as --max-latency predicts it) for a Pareto search (default: accuracy)")
    s.add_argument("--num-samples", type=int, default=SearchSpec.num_samples, help=f"trials (default: {SearchSpec.num_samples})")
    s.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: as many as the cluster's CPUs, or GPUs, hold)")
    s.add_argument("--cpus-per-trial", type=float, default=SearchSpec.cpus_per_trial)
    s.add_argument("--gpus-per-trial", type=float, default=SearchSpec.gpus_per_trial, help="fractions allowed, e.g. 0.5")
    s.add_argument("--scheduler", default=SearchSpec.scheduler, choices=SCHEDULERS, help="asha stops bad trials early")
    s.add_argument("--address", default=None, help="an existing Ray cluster (default: an embedded local Ray)")
    s.add_argument("--storage", default=None, help="where Tune keeps the experiment: a folder or a URI such as s3://bucket/path (default: the run folder)")
    s.add_argument("--epochs", type=int, default=SearchSpec.epochs, help=f"distillation epochs per trial (default: {SearchSpec.epochs})")
    s.add_argument("--final-epochs", type=int, default=SearchSpec.final_epochs,
                   help=f"distillation epochs of the kept student (default: {SearchSpec.final_epochs})")
    s.add_argument("--runs", default=SearchSpec.run_root, help=f"folder of run folders (default: {SearchSpec.run_root})")
    s.add_argument("--name", default=None, help="the run id (default: model-dataset-time)")
    s.add_argument("--leaderboard", default=SearchSpec.leaderboard, help=f"the Parquet leaderboard folder (default: {SearchSpec.leaderboard})")
    s.add_argument("--screen", type=int, default=SearchSpec.screen, metavar="N",
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
    r.add_argument("--runs", default=SearchSpec.run_root, metavar="DIR",
                   help=f"folder of run folders (default: {SearchSpec.run_root})")
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
    lb.add_argument("--dir", default=SearchSpec.leaderboard, help=f"the leaderboard folder (default: {SearchSpec.leaderboard})")
    lb.add_argument("--model", default=None)
    lb.add_argument("--dataset", default=None)
    lb.add_argument("--format", default="table", choices=("table", "csv", "json"))
