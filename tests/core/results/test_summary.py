"""What a leaderboard's rows say: the Pareto front, a run's summary, ranking at equal epochs, compare."""

from __future__ import annotations

import json
from typing import Any

import pytest

from prunetune.results.summary import compare_runs, pareto_front, rank_at_equal_epochs, summarize_run
from tests.core.results.test_leaderboard import row


def test_pareto_front_of_a_known_set() -> None:
    rows = [
        {"trial_id": "a", "macs": 10, "val_accuracy": 70.0},
        {"trial_id": "b", "macs": 20, "val_accuracy": 80.0},
        {"trial_id": "b2", "macs": 20, "val_accuracy": 80.0},  # a tie with b: both stay
        {"trial_id": "c", "macs": 20, "val_accuracy": 75.0},  # same cost as b, worse
        {"trial_id": "d", "macs": 30, "val_accuracy": 80.0},  # dearer than b, no better
        {"trial_id": "e", "macs": 40, "val_accuracy": 90.0},
        {"trial_id": "f", "macs": 5, "val_accuracy": None},
        {"trial_id": "g", "macs": None, "val_accuracy": 99.0},
        {"trial_id": "h", "macs": 50, "val_accuracy": 85.0},
    ]
    assert [r["trial_id"] for r in pareto_front(rows)] == ["a", "b", "b2", "e"]
    other = [
        {"trial_id": "x", "latency_b256_ms": 3.0, "test_accuracy": 90.0},
        {"trial_id": "y", "latency_b256_ms": 1.0, "test_accuracy": 91.0},
        {"trial_id": "z", "latency_b256_ms": float("nan"), "test_accuracy": 99.0},
    ]
    assert [r["trial_id"] for r in pareto_front(other, "test_accuracy", "latency_b256_ms")] == ["y"]
    assert pareto_front([]) == []


def _run(run: str, best: float, test: float, fraction: float) -> list[dict[str, Any]]:
    return [
        row("t0", run, 0, val_accuracy=best - 5, macs=1_000_000),
        row("t1", run, 1, val_accuracy=best, macs=2_000_000),
        row("t2", run, 2, val_accuracy=None, status="error", error="boom"),
        row("t3", run, 3, val_accuracy=60.0, status="stopped", macs=500_000),
        row("final", run, 4, kind="final", val_accuracy=best, test_accuracy=test, macs_fraction=fraction,
            latency_b1_ms=1.5, latency_b256_ms=30.0),
    ]


def test_summarize_run() -> None:
    s = summarize_run(_run("r1", 84.0, 83.5, 0.3))
    assert (s.run_id, s.model, s.dataset) == ("r1", "resnet", "fashion_mnist_demo")
    assert dict(s.trials) == {"ok": 2, "error": 1, "stopped": 1, "infeasible": 0}
    assert (s.best_val_accuracy, s.best_trial_id, s.final_test_accuracy) == (84.0, "t1", 83.5)
    assert s.front_size == 2
    with pytest.raises(ValueError, match="one run"):
        summarize_run(_run("r1", 84.0, 83.5, 0.3) + _run("r2", 84.0, 83.5, 0.3))


def test_compare_runs_mentions_both_runs_and_the_difference() -> None:
    text = compare_runs(_run("alpha", 84.0, 83.5, 0.3), _run("beta", 86.5, 85.0, 0.25))
    assert "alpha" in text.splitlines()[0] and "beta" in text.splitlines()[0]
    assert "84.00 (t1)" in text and "86.50 (t1)" in text
    assert "83.50" in text and "85.00" in text and "+1.50 pts" in text
    assert "30.0" in text and "25.0" in text and "-5.0 pts" in text
    assert "2 / 1 / 1" in text


def _asha_run(run: str) -> list[dict[str, Any]]:
    """ASHA at 2 epochs: the first trial passed the empty rung, the others stopped at epoch 1."""
    history = {"t0": [70.0, 80.0], "t1": [78.0], "t2": [60.0]}
    return [row(t, run, i, val_history=json.dumps(h), val_accuracy=h[-1], epochs=len(h),
                status="ok" if len(h) == 2 else "stopped") for i, (t, h) in enumerate(history.items())]


def test_a_run_s_best_trial_is_the_best_at_equal_epochs() -> None:
    s = summarize_run(_asha_run("r1"))
    assert (s.best_trial_id, s.best_val_accuracy, s.best_epoch) == ("t1", 78.0, 1)  # not t0's 80 at epoch 2
    text = compare_runs(_asha_run("a"), _asha_run("b"))
    assert "at epoch 1 / 1" in text and "78.00 (t1)" in text


def test_rank_at_equal_epochs_orders_ties_by_macs_then_row() -> None:
    rows = [row("big", macs=3, val_accuracy=90.0), row("first", macs=1, val_accuracy=90.0),
            row("second", macs=1, val_accuracy=90.0), row("low", macs=1, val_accuracy=50.0),
            row("error", status="error", val_accuracy=99.0), row("final", kind="final", val_accuracy=99.0)]
    epoch, ranked = rank_at_equal_epochs(rows)
    assert [r["trial_id"] for r, _ in ranked] == ["first", "second", "big", "low"]
    assert rank_at_equal_epochs([]) == (None, [])


def test_compare_runs_without_a_final_student() -> None:
    rows = [r for r in _run("alpha", 84.0, 83.5, 0.3) if r["kind"] == "trial"]
    assert "final test accuracy (%)" in compare_runs(rows, _run("beta", 86.5, 85.0, 0.25))
