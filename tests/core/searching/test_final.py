"""Which trials the final stage trains again: compared at equal epochs."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("ray")

from prunetune.results.summary import pareto_front  # noqa: E402
from prunetune.searching.final import choose_trials  # noqa: E402


def trial(trial_id: str, history: list[float] | None, status: str = "ok", macs: int = 1000,
          **over: Any) -> dict[str, Any]:
    """A trial row as the leaderboard holds it; ``history=None``: a row from before val_history."""
    row: dict[str, Any] = {
        "trial_id": trial_id, "kind": "trial", "status": status, "macs": macs,
        "val_history": None if history is None else json.dumps(history),
        "val_accuracy": history[-1] if history else None, "epochs": len(history or []),
    }
    return {**row, **over}


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["trial_id"] for r in rows]


def chosen_before_equal_epochs(rows: list[dict[str, Any]], multi_objective: bool) -> list[dict[str, Any]]:
    """The rule before trials were compared at equal epochs: the best ok trial at its last epoch."""
    ok = [r for r in rows if r["kind"] == "trial" and r["status"] == "ok" and r["val_accuracy"] is not None]
    if not ok:
        return []
    best = max(ok, key=lambda r: (r["val_accuracy"], -(r["macs"] or 0)))
    if not multi_objective:
        return [best]
    front = pareto_front(ok, maximize="val_accuracy", minimize="macs")
    return [best] + [r for r in front if r["trial_id"] != best["trial_id"]]


# ASHA with 2 epochs: the first trial passed the empty rung at epoch 1, the rest were stopped there.
ASHA = [
    trial("uniform", [70.0, 80.0], macs=100),
    trial("t2", [75.0], "stopped", macs=50),
    trial("t3", [78.0], "stopped", macs=200),
    trial("t4", [60.0], "stopped", macs=300),
]


def test_trials_stopped_early_are_compared_at_the_epoch_they_reached() -> None:
    assert ids(chosen_before_equal_epochs(ASHA, False)) == ["uniform"]  # the bias of issue 10
    assert ids(choose_trials(ASHA, False)) == ["t3"]  # best at epoch 1: 78 against the uniform plan's 70


def test_the_highest_epoch_that_two_trials_reached_decides() -> None:
    rows = [trial("a", [70.0, 80.0, 81.0]), trial("b", [72.0, 79.0], "stopped"), trial("c", [90.0], "stopped")]
    assert ids(choose_trials(rows, False)) == ["a"]  # epoch 2: 80 against 79; c never reached it
    rows.append(trial("d", [71.0, 78.0, 82.0]))
    assert ids(choose_trials(rows, False)) == ["d"]  # now two reached epoch 3


def test_a_single_trial_is_chosen_at_its_own_epoch() -> None:
    assert ids(choose_trials([trial("only", [55.0], "stopped")], False)) == ["only"]
    assert choose_trials([], False) == [] and choose_trials([], True) == []


def test_with_fifo_the_choice_is_the_best_final_accuracy() -> None:
    rows = [
        trial("a", [60.0, 81.0], macs=300),
        trial("b", [75.0, 79.0], macs=100),
        trial("c", [50.0, 81.0], macs=200),  # ties with a: the fewer MACs win
        trial("d", [65.0, 70.0], macs=50),
        trial("e", [80.0, 75.0], macs=150),
    ]
    for multi in (False, True):
        assert choose_trials(rows, multi) == chosen_before_equal_epochs(rows, multi)
    assert ids(choose_trials(rows, False)) == ["c"]
    assert ids(choose_trials(rows, True)) == ["c", "d", "b"]


def test_errors_infeasible_trials_and_finals_are_never_chosen() -> None:
    rows = [
        trial("ok", [70.0, 72.0]),
        trial("stopped", [71.0], "stopped"),
        # An error keeps the accuracies of the epochs it finished, but is never kept.
        trial("error", [99.0, 99.0], "error", val_accuracy=None, error="TrainingDiverged: nan"),
        trial("infeasible", None, "infeasible", val_accuracy=0.0, epochs=0),
        trial("final-ok", [95.0, 95.0, 95.0], kind="final"),
    ]
    assert ids(choose_trials(rows, False)) == ["stopped"]  # epoch 1: only ok and stopped count
    assert choose_trials([r for r in rows if r["status"] in ("error", "infeasible")], True) == []


def test_the_pareto_front_uses_the_accuracies_of_the_same_epoch() -> None:
    # At epoch 1: uniform (100 MACs, 70) is beaten by t2 (50, 75); t4 (300, 60) by everything cheaper.
    # Its final 80 would have put the uniform plan on the front and knocked t2's neighbour t3 off.
    assert ids(choose_trials(ASHA, True)) == ["t3", "t2"]


def test_rows_without_val_history_count_at_their_last_epoch() -> None:
    old = [trial("a", None, val_accuracy=80.0, epochs=2), trial("b", None, "stopped", val_accuracy=85.0, epochs=1),
           trial("c", None, "stopped", val_accuracy=82.0, epochs=1)]
    assert ids(choose_trials(old, False)) == ["b"]  # b and c share epoch 1; a is known only at 2
    fifo = [trial("a", None, val_accuracy=80.0, epochs=2), trial("b", None, val_accuracy=83.0, epochs=2)]
    assert choose_trials(fifo, True) == chosen_before_equal_epochs(fifo, True)
    # Mixed with new rows: an old row is compared only at its last epoch.
    mixed = [trial("new1", [70.0, 90.0]), trial("new2", [95.0, 85.0]), trial("old", None, "stopped",
                                                                           val_accuracy=99.0, epochs=1)]
    assert ids(choose_trials(mixed, False)) == ["new1"]  # epoch 2, which new1 and new2 reached
