"""A leaderboard row for the results tests, with any column changed."""

from __future__ import annotations

import datetime as dt
from typing import Any

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def row(trial: str = "t0", run: str = "r1", seconds: float = 0, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": run, "trial_id": trial, "kind": "trial", "status": "ok",
        "time": T0 + dt.timedelta(seconds=seconds), "model": "resnet", "dataset": "fashion_mnist_demo",
        "val_accuracy": 80.0, "macs": 1_000_000, "teacher_macs": 4_000_000,
    }
    return {**base, **over}
