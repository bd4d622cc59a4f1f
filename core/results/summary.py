"""What a leaderboard's rows say: the Pareto front, a run's summary, trials ranked at equal
epochs, and two runs compared."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from prunetune.results.schema import STATUSES

__all__ = [
    "RunSummary", "compare_runs", "epoch_accuracies", "pareto_front", "rank_at_equal_epochs", "summarize_run",
]


def _number(row: Mapping[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def pareto_front(
    rows: Iterable[Mapping[str, Any]], maximize: str = "val_accuracy", minimize: str = "macs"
) -> list[dict[str, Any]]:
    """The rows no other row beats on both ``maximize`` and ``minimize``.

    A row is dominated when another is at least as good on both and better on one; rows equal
    on both are all kept. Rows with a null in either column are skipped; filter statuses and
    kinds before calling.

    Returns:
        The front, by ``minimize`` ascending.
    """
    points = []
    for row in rows:
        hi, lo = _number(row, maximize), _number(row, minimize)
        if hi is not None and lo is not None:
            points.append((lo, hi, dict(row)))
    # Cheapest first, best first among equals: a row is on the front iff it beats every cheaper one.
    points.sort(key=lambda p: (p[0], -p[1]))
    front: list[dict[str, Any]] = []
    best_hi, best_lo = -math.inf, math.nan
    for lo, hi, row in points:
        if hi > best_hi:
            front.append(row)
            best_hi, best_lo = hi, lo
        elif hi == best_hi and lo == best_lo:
            front.append(row)
    return front


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """The headline numbers of one run.

    Attributes:
        run_id: The run.
        model: The run's teacher model (None when its rows disagree or lack one).
        dataset: The run's dataset (likewise).
        trials: Trial rows by status (ok, error, stopped, infeasible).
        best_val_accuracy: The best validation accuracy, %, of the ok and stopped trials
            compared at equal epochs (:func:`rank_at_equal_epochs`).
        best_trial_id: The trial that reached it.
        best_epoch: The epoch at which the trials were compared.
        final_test_accuracy: The final student's test accuracy, % (the latest final row).
        final_macs_fraction: The final student's MACs / the teacher's.
        final_latency_b1_ms: The final student's latency at batch 1.
        final_latency_b256_ms: The final student's latency at batch 256.
        front_size: Ok trials on the accuracy-MACs Pareto front.
    """

    run_id: str
    model: str | None
    dataset: str | None
    trials: Mapping[str, int]
    best_val_accuracy: float | None
    best_trial_id: str | None
    best_epoch: int | None
    final_test_accuracy: float | None
    final_macs_fraction: float | None
    final_latency_b1_ms: float | None
    final_latency_b256_ms: float | None
    front_size: int


def _only(rows: Sequence[Mapping[str, Any]], name: str) -> str | None:
    values = {r.get(name) for r in rows}
    return values.pop() if len(values) == 1 else None


_Row = TypeVar("_Row", bound=Mapping[str, Any])


def epoch_accuracies(row: Mapping[str, Any]) -> dict[int, float]:
    """A trial row's validation accuracy by epoch: its ``val_history``, else its last epoch's."""
    if row.get("val_history"):
        return {epoch: acc for epoch, acc in enumerate(json.loads(row["val_history"]), 1) if acc is not None}
    if row.get("val_accuracy") is not None:  # a row from before val_history
        return {int(row.get("epochs") or 0): row["val_accuracy"]}
    return {}


def rank_at_equal_epochs(rows: Iterable[_Row]) -> tuple[int | None, list[tuple[_Row, float]]]:
    """The ``ok`` and ``stopped`` trial rows ranked by validation accuracy at one shared epoch.

    A scheduler that stops trials early (ASHA) lets some train longer, and a trial should not
    win by its extra epochs alone. The epoch of comparison is the highest at which at least two
    trials have an accuracy (or the highest any has, when none share one); only the trials with
    an accuracy there are ranked, best first (ties: the fewer MACs, then the earlier row). A row
    without ``val_history`` (written before it was recorded) has an accuracy only at its last
    epoch. When every trial trained all its epochs (FIFO), this is the order of ``val_accuracy``.

    Returns:
        ``(epoch, [(row, accuracy at epoch), ...])``; ``(None, [])`` when no trial has an accuracy.
    """
    candidates = [(r, acc) for r in rows if r["kind"] == "trial" and r["status"] in ("ok", "stopped")
                  if (acc := epoch_accuracies(r))]
    if not candidates:
        return None, []
    reached: dict[int, int] = {}
    for _, acc in candidates:
        for epoch in acc:
            reached[epoch] = reached.get(epoch, 0) + 1
    shared = [epoch for epoch, n in reached.items() if n >= 2]
    epoch = max(shared or reached)
    ranked = [(i, r, acc[epoch]) for i, (r, acc) in enumerate(candidates) if epoch in acc]
    ranked.sort(key=lambda item: (-item[2], item[1]["macs"] or 0, item[0]))
    return epoch, [(r, a) for _, r, a in ranked]


def summarize_run(rows: Sequence[Mapping[str, Any]]) -> RunSummary:
    """The :class:`RunSummary` of one run's rows.

    Raises:
        ValueError: ``rows`` is empty or holds more than one run.
    """
    run_ids = {r["run_id"] for r in rows}
    if len(run_ids) != 1:
        raise ValueError(f"summarize_run takes the rows of one run, got runs {sorted(run_ids)}")
    trials = [r for r in rows if r["kind"] == "trial"]
    ok = [r for r in trials if r["status"] == "ok" and _number(r, "val_accuracy") is not None]
    epoch, ranked = rank_at_equal_epochs(rows)
    best = ranked[0] if ranked else None
    finals = sorted((r for r in rows if r["kind"] == "final" and r["status"] == "ok"), key=lambda r: r["time"])
    final = finals[-1] if finals else {}
    return RunSummary(
        run_id=run_ids.pop(),
        model=_only(rows, "model"),
        dataset=_only(rows, "dataset"),
        trials={s: sum(r["status"] == s for r in trials) for s in STATUSES},
        best_val_accuracy=best[1] if best else None,
        best_trial_id=best[0]["trial_id"] if best else None,
        best_epoch=epoch,
        final_test_accuracy=_number(final, "test_accuracy"),
        final_macs_fraction=_number(final, "macs_fraction"),
        final_latency_b1_ms=_number(final, "latency_b1_ms"),
        final_latency_b256_ms=_number(final, "latency_b256_ms"),
        front_size=len(pareto_front(ok)),
    )


def _diff(a: float | None, b: float | None, fmt: str) -> str:
    return "-" if a is None or b is None else format(b - a, fmt)


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def compare_runs(rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]]) -> str:
    """Two runs side by side: trials, best validation accuracy, the final student, the front.

    The last column is run B minus run A. Check that both runs exist first (:func:`require_run`).
    """
    a, b = summarize_run(rows_a), summarize_run(rows_b)

    def pct(s: RunSummary) -> float | None:
        return None if s.final_macs_fraction is None else 100 * s.final_macs_fraction

    def best(s: RunSummary) -> str:
        return "-" if s.best_val_accuracy is None else f"{s.best_val_accuracy:.2f} ({s.best_trial_id})"

    table = [
        ("model / dataset", f"{a.model or '-'} / {a.dataset or '-'}", f"{b.model or '-'} / {b.dataset or '-'}", ""),
        ("trials ok / error / stopped / infeasible", " / ".join(str(a.trials[s]) for s in STATUSES),
         " / ".join(str(b.trials[s]) for s in STATUSES), _diff(a.trials["ok"], b.trials["ok"], "+d") + " ok"),
        (f"best val accuracy (%) at epoch {a.best_epoch or '-'} / {b.best_epoch or '-'}", best(a), best(b),
         _diff(a.best_val_accuracy, b.best_val_accuracy, "+.2f") + " pts"),
        ("final test accuracy (%)", _opt(a.final_test_accuracy, ".2f"), _opt(b.final_test_accuracy, ".2f"),
         _diff(a.final_test_accuracy, b.final_test_accuracy, "+.2f") + " pts"),
        ("final MACs (% of teacher)", _opt(pct(a), ".1f"), _opt(pct(b), ".1f"), _diff(pct(a), pct(b), "+.1f") + " pts"),
        ("final latency b1 (ms)", _opt(a.final_latency_b1_ms, ".2f"), _opt(b.final_latency_b1_ms, ".2f"),
         _diff(a.final_latency_b1_ms, b.final_latency_b1_ms, "+.2f")),
        ("final latency b256 (ms)", _opt(a.final_latency_b256_ms, ".1f"), _opt(b.final_latency_b256_ms, ".1f"),
         _diff(a.final_latency_b256_ms, b.final_latency_b256_ms, "+.1f")),
        ("Pareto front size", str(a.front_size), str(b.front_size), _diff(a.front_size, b.front_size, "+d")),
    ]
    from prunetune.results.report import format_table

    return format_table(("", a.run_id, b.run_id, "B - A"), table)
