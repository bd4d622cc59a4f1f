"""The end of a search: the best feasible trial(s) distilled again, measured once on the test split.

With one objective the best trial by validation accuracy is kept; with several, every point of
the Pareto front (validation accuracy against MACs) is. The first is ``best_student.pt``.

With ``--max-latency uniform`` (the default with ``--max-macs``), a chosen trial whose student
is slower than the uniform student of the budget, both timed here in isolation, is not kept
(:func:`not_slower_than_uniform`): trials only met the cap by the latency table's prediction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import torch

from prunetune.components.cluster import ensure_ray
from prunetune.components.spaces import Candidate
from prunetune.errors import TrainingDiverged
from prunetune.results.checkpoint import rebuild_student, save_student
from prunetune.results.leaderboard import Leaderboard
from prunetune.results.plot import pareto_png
from prunetune.results.report import side_by_side
from prunetune.results.summary import pareto_front, rank_at_equal_epochs
from prunetune.searching.prepare import SearchRun
from prunetune.searching.trial import TrialInputs, distill_candidate, make_candidate_student, worker_state
from prunetune.searching.tuning import RowContext, trial_row
from prunetune.structure.measure import Measurement, measure
from prunetune.structure.plan import StudentPlan
from prunetune.student.budget import MacsCounter
from prunetune.student.latency import isolated_latency
from prunetune.training.devices import describe_device
from prunetune.training.loop import evaluate

__all__ = ["UNIFORM_TOLERANCE", "choose_trials", "finish_run", "not_slower_than_uniform", "train_final"]

#: How much slower than the uniform student a kept student may time, for timing noise: the least
#: of three medians at batch 256 still differs by a percent or two between equal models.
UNIFORM_TOLERANCE = 0.03


def choose_trials(rows: list[dict[str, Any]], multi_objective: bool) -> list[dict[str, Any]]:
    """The trials to finish: the best by validation accuracy, or the whole Pareto front.

    Trials are compared at equal epochs (:func:`prunetune.results.summary.rank_at_equal_epochs`),
    so that one a scheduler let train longer does not win by its extra epochs alone. With
    several objectives, the Pareto front (that accuracy against MACs) among the same trials
    follows the best.

    Returns:
        The rows, the best first; [] when no trial has an accuracy.
    """
    _, ranked = rank_at_equal_epochs(rows)
    if not ranked:
        return []
    best = ranked[0][0]
    if not multi_objective:
        return [best]
    points = [{"index": i, "accuracy": a, "macs": r["macs"]} for i, (r, a) in enumerate(ranked)]
    front = [ranked[p["index"]][0] for p in pareto_front(points, maximize="accuracy", minimize="macs")]
    return [best] + [r for r in front if r["trial_id"] != best["trial_id"]]


def _candidate(row: Mapping[str, Any]) -> Candidate:
    """The trial's candidate: its plan as repaired (the row's), its components and their options."""
    options = Candidate.from_params(json.loads(row["params_json"] or "{}")).distiller_options
    return Candidate(StudentPlan.from_dict(json.loads(row["plan"])), row["scorer"], row["distiller"], options)


def train_final(inputs: TrialInputs, candidate: Candidate, epochs: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Build and distil one student from the teacher; ``(cpu state_dict, description)``."""
    torch.set_num_threads(max(1, int(inputs.spec.cpus_per_trial)))
    state = worker_state(inputs)  # a worker that ran trials of this search has it already
    student, _, meta = make_candidate_student(state.registry, inputs, state.teacher, candidate, state.device)
    distill_candidate(state, inputs, candidate, student, epochs)
    meta["trained_on"] = describe_device(state.device)
    return {k: v.detach().cpu() for k, v in student.state_dict().items()}, meta


def _train_remote(run: SearchRun, candidate: Candidate) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import ray

    ensure_ray(run.spec.address)
    task = ray.remote(train_final).options(num_cpus=run.spec.cpus_per_trial, num_gpus=run.spec.gpus_per_trial)
    try:
        return ray.get(task.remote(run.inputs, candidate, run.spec.final_epochs))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, TrainingDiverged):  # the user's one line, not Ray's traceback
            raise exc.cause from None
        raise


def not_slower_than_uniform(run: SearchRun, rows: list[dict[str, Any]], chosen: list[dict[str, Any]],
                            echo: Callable[[str], None] = print,
                            latency: Callable[[StudentPlan], float] | None = None) -> list[dict[str, Any]]:
    """``chosen`` (as :func:`choose_trials` gave it) less the trials whose students are slower
    than the uniform student of the MACs budget by more than :data:`UNIFORM_TOLERANCE`: the best
    gives way to the next best by :func:`choose_trials` that is not slower (one line echoed per
    trial passed over), other Pareto points are dropped. A student of the uniform student's
    architecture (the uniform trial) is never timed: it is not slower. When no trial is fast
    enough, the chosen trials are kept. Only with ``--max-latency uniform``; else ``chosen`` as
    it is.

    Args:
        latency: Milliseconds of a plan's student at the spec's latency batch and threads
            (default: its architecture timed here, :func:`prunetune.student.latency.isolated_latency`).
    """
    spec = run.spec
    if not chosen or spec.latency_cap != "uniform" or run.uniform_plan is None:
        return chosen
    example = run.data.train_x[:1]
    if latency is None:
        latency = isolated_latency(run.teacher, example, spec.latency_batch, spec.latency_threads or 1)
    counter = MacsCounter(run.teacher, example)
    uniform_shapes = counter.layer_shapes(run.uniform_plan)
    uniform_ms = latency(run.uniform_plan)

    def too_slow(row: Mapping[str, Any]) -> float | None:
        plan = StudentPlan.from_dict(json.loads(row["plan"]))
        if counter.layer_shapes(plan) == uniform_shapes:
            return None
        ms = latency(plan)
        return ms if ms > uniform_ms * (1 + UNIFORM_TOLERANCE) else None

    best, remaining = chosen[0], list(rows)
    while (ms := too_slow(best)) is not None:
        remaining = [r for r in remaining if r["trial_id"] != best["trial_id"]]
        following = choose_trials(remaining, multi_objective=False)
        if not following:
            echo(f"no trial's student is as fast as the uniform student ({uniform_ms:.1f} ms per batch of "
                 f"{spec.latency_batch}); keeping trial {chosen[0]['trial_id']}")
            return chosen
        echo(f"trial {best['trial_id']}: {ms:.1f} ms per batch of {spec.latency_batch}, slower than the uniform "
             f"student's {uniform_ms:.1f} ms (+{UNIFORM_TOLERANCE:.0%} allowed); finishing trial "
             f"{following[0]['trial_id']} instead")
        best = following[0]
    others = []
    for row in chosen[1:]:
        if row["trial_id"] == best["trial_id"]:
            continue
        if (ms := too_slow(row)) is not None:
            echo(f"trial {row['trial_id']}: {ms:.1f} ms per batch of {spec.latency_batch}, slower than the uniform "
                 f"student's {uniform_ms:.1f} ms; not kept")
        else:
            others.append(row)
    return [best, *others]


def finish_run(run: SearchRun, board: Leaderboard, ctx: RowContext, echo: Callable[[str], None] = print,
               latency: Callable[[StudentPlan], float] | None = None) -> dict[str, Any]:
    """Finish the chosen trials, write them and their rows, the Pareto plot and the summary.

    ``latency`` times a plan's student for :func:`not_slower_than_uniform` (tests inject one).
    """
    rows = board.rows(run_id=run.run_id)
    chosen = choose_trials(rows, len(run.spec.objectives) > 1)
    chosen = not_slower_than_uniform(run, rows, chosen, echo, latency)
    registry = run.host.registry
    data, shape = run.data, run.data.input_shape
    device = torch.device("cpu")
    teacher_acc, _ = evaluate(run.teacher, data.test_x, data.test_y, device)
    teacher_m = measure(run.teacher, teacher_acc, shape)
    finals = []
    for row in chosen:
        try:
            state, meta = _train_remote(run, _candidate(row))
        except TrainingDiverged as exc:
            # Recorded, never kept: the next chosen trial (if any) becomes the best student.
            failed = trial_row(ctx, f"final-{row['trial_id']}", {"plan": row["plan"], "status": "error"}, str(exc), kind="final")
            board.write([failed], key=f"{run.run_id}-final-{row['trial_id']}")
            echo(f"final training of trial {row['trial_id']} diverged: {exc}")
            continue
        described = run.inputs.model
        student = rebuild_student(registry, meta, described.module if described.is_live else run.spec.model)
        student.load_state_dict(state)
        val_acc, _ = evaluate(student, data.val_x, data.val_y, device)
        test_acc, _ = evaluate(student, data.test_x, data.test_y, device)
        m = measure(student, test_acc, shape)
        path = run.run_dir / ("best_student.pt" if not finals else f"student-{row['trial_id']}.pt")
        meta.update(dataset=run.spec.dataset, dataset_options=dict(run.spec.dataset_options), seed=run.spec.seed,
                    val_fraction=run.spec.val_fraction, metrics={"val_accuracy": val_acc, **m.to_dict()},
                    teacher_metrics=teacher_m.to_dict(), source_trial=row["trial_id"])
        save_student(path, student, meta)
        metrics = {**m.to_dict(), "val_accuracy": val_acc, "test_accuracy": test_acc, "status": "ok",
                   "epoch": run.spec.final_epochs, "plan": json.dumps(meta["plan"]), "scorer": meta["scorer"],
                   "distiller": meta["distiller"], "macs_fraction": m.macs / run.teacher_macs,
                   "params_json": row["params_json"], "teacher_test_accuracy": teacher_acc,
                   "hardware": meta["trained_on"]}
        final_row = trial_row(ctx, f"final-{row['trial_id']}", metrics, None, kind="final")
        board.write([final_row], key=f"{run.run_id}-final-{row['trial_id']}")
        finals.append((row, m, path))
    return _summarise(run, board, teacher_m, finals, echo)


def _summarise(run: SearchRun, board: Leaderboard, teacher: Measurement,
               finals: list[tuple[dict[str, Any], Measurement, Any]], echo: Callable[[str], None]) -> dict[str, Any]:
    rows = board.rows(run_id=run.run_id)
    plot = pareto_png([r for r in rows if r["kind"] == "trial"], run.run_dir / "pareto.png",
                      chosen=[row["trial_id"] for row, _, _ in finals[:1]],
                      teacher={"macs": run.teacher_macs, "val_accuracy": run.teacher_val_accuracy})
    lines = [f"run {run.run_id}: {sum(r['kind'] == 'trial' for r in rows)} trials"]
    if finals:
        row, best, path = finals[0]
        lines += [f"best student (trial {row['trial_id']}, validation {row['val_accuracy']:.2f}% in the search):",
                  side_by_side(teacher, best)]
    else:
        within = " within the budget" if run.spec.max_macs is not None else ""
        lines.append(f"no trial finished{within}: no student was kept")
    summary = "\n".join(lines)
    (run.run_dir / "summary.txt").write_text(summary + "\n")
    echo(summary)
    written = [p.name for p in (*(path for _, _, path in finals), plot, run.run_dir / "summary.txt") if p.is_file()]
    echo(f"outputs: {run.run_dir} ({', '.join(written)}); leaderboard: {run.spec.leaderboard}")
    result = {"run_id": run.run_id, "run_dir": str(run.run_dir), "pareto_png": str(plot),
              "students": [str(path) for _, _, path in finals],
              "best": finals[0][1].to_dict() if finals else None, "teacher": teacher.to_dict()}
    run.host.run_finished(run.run_id, result)
    return result
