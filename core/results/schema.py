"""The leaderboard's columns (:data:`SCHEMA`) and how a row is normalised to them."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

__all__ = [
    "COLUMNS", "FORMATS", "JSON_COLUMNS", "KINDS", "SCHEMA", "STATUSES", "TABLE_COLUMNS", "normalize_row",
]

KINDS = ("trial", "final")
STATUSES = ("ok", "error", "stopped", "infeasible")
FORMATS = ("table", "csv", "json")

_UTC = dt.timezone.utc

# (name, type, nullable, meaning). Accuracies are percentages (0-100), as prunetune measures them.
_FIELDS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("run_id", pa.string(), False, "the search run"),
    ("trial_id", pa.string(), False, "the trial within the run (the final student: its own id)"),
    ("kind", pa.string(), False, "'trial' (one searched candidate) or 'final' (the chosen student, retrained)"),
    ("time", pa.timestamp("us", tz="UTC"), False, "when the row was made (default: when written)"),
    ("model", pa.string(), True, "teacher model: zoo name or module:factory"),
    ("dataset", pa.string(), True, "dataset plugin"),
    ("search_space", pa.string(), True, "search-space plugin"),
    ("strategy", pa.string(), True, "search strategy plugin"),
    ("scorer", pa.string(), True, "scorer plugin"),
    ("pruner", pa.string(), True, "pruner plugin"),
    ("distiller", pa.string(), True, "distiller plugin"),
    ("plan", pa.string(), True, "the full plan as JSON: {ratio, ratios, kernels, round_to}"),
    ("ratios", pa.string(), True, "per-group ratios as JSON {layer: ratio} (default: the plan's)"),
    ("kernels", pa.string(), True, "per-conv kernel sizes as JSON {layer: size} (default: the plan's)"),
    ("val_accuracy", pa.float64(), True, "validation accuracy, %"),
    ("val_loss", pa.float64(), True, "validation loss (the distiller-free cross-entropy)"),
    ("val_history", pa.string(), True, "validation accuracy after each epoch, %: a JSON list, epoch 1 first (null in older files)"),
    ("test_accuracy", pa.float64(), True, "test accuracy, % (final students only, by design)"),
    ("macs", pa.int64(), True, "multiply-accumulates of one forward pass of one image"),
    ("params", pa.int64(), True, "parameter count"),
    ("macs_fraction", pa.float64(), True, "student MACs / teacher MACs (default: macs / teacher_macs)"),
    ("teacher_macs", pa.int64(), True, "the teacher's MACs"),
    ("teacher_accuracy", pa.float64(), True,
     "the teacher's validation accuracy, % (older files: a final row's holds its test accuracy)"),
    ("teacher_test_accuracy", pa.float64(), True, "the teacher's test accuracy, % (final rows only)"),
    ("latency_b1_ms", pa.float64(), True, "CPU latency at batch 1, ms (median; final students only)"),
    ("latency_b256_ms", pa.float64(), True,
     "CPU latency at batch 256, ms: a final student's timed (median), a trial's predicted by the latency table (at --latency-batch)"),
    ("epochs", pa.int32(), True, "distillation epochs the student trained"),
    ("status", pa.string(), False, "'ok', 'error', 'stopped' (ended early by the scheduler or the user) or 'infeasible' (over the MACs budget even after repair; never trained)"),
    ("error", pa.string(), True, "the error text of a failed trial"),
    ("attempts", pa.int32(), True, "how many times the trial started: 1, or more when Tune retried it after a failure"),
    ("plugin_versions", pa.string(), True, "JSON {distribution: version} of the plugins in use"),
    ("seed", pa.int64(), True, "the run's seed"),
    ("git_revision", pa.string(), True, "prunetune's git revision, when run from a checkout"),
    ("hardware", pa.string(), True, "what trained the row's student, e.g. 'cpu x2' (torch threads) or 'NVIDIA H100'"),
    ("node", pa.string(), True, "the Ray node the trial ran on"),
    ("wall_seconds", pa.float64(), True, "the trial's wall time, s"),
    ("train_seconds", pa.float64(), True, "trial time in distillation (optimizer set-up, epochs, validation), s"),
    ("prune_seconds", pa.float64(), True, "trial time building the student (scoring, surgery), its MACs and predicted latency, s"),
    ("overhead_seconds", pa.float64(), True, "trial time outside training and building the student (wall - train - prune), s"),
    ("params_json", pa.string(), True, "the raw parameters the search suggested, as JSON"),
)

SCHEMA = pa.schema(
    [pa.field(name, typ, nullable=nullable, metadata={"doc": doc}) for name, typ, nullable, doc in _FIELDS]
)
"""Every leaderboard column; each field's ``doc`` metadata says what it holds."""

COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
JSON_COLUMNS = ("plan", "ratios", "kernels", "val_history", "plugin_versions", "params_json")
TABLE_COLUMNS = (
    "run_id", "trial_id", "kind", "status", "val_accuracy", "test_accuracy", "macs_fraction",
    "macs", "params", "latency_b256_ms", "scorer", "distiller", "search_space",
)
_REQUIRED = tuple(name for name, _, nullable, _ in _FIELDS if not nullable and name != "time")
_INT_COLUMNS = {f.name for f in SCHEMA if pa.types.is_integer(f.type)}
_FLOAT_COLUMNS = {f.name for f in SCHEMA if pa.types.is_floating(f.type)}
_STRING_COLUMNS = {f.name for f in SCHEMA if pa.types.is_string(f.type)} - set(JSON_COLUMNS)


# ----------------------------------------------------------------------------- rows in


def _to_time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        # A naive time is taken as UTC, not local time, so machines in other zones agree.
        return value if value.tzinfo else value.replace(tzinfo=_UTC)
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, _UTC)
    raise ValueError(f"leaderboard time {value!r} is neither a datetime nor epoch seconds")


def _to_json(name: str, value: Any) -> str:
    if isinstance(value, str):
        try:  # a malformed string would otherwise only surface when someone reads it back
            json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"leaderboard column {name!r} holds invalid JSON: {exc}") from exc
        return value
    try:
        return json.dumps(value, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"leaderboard column {name!r}: {exc}") from exc


def _normalize_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "time":
        return _to_time(value)
    if name in JSON_COLUMNS:
        return _to_json(name, value)
    if name in _STRING_COLUMNS and not isinstance(value, str):
        raise ValueError(f"leaderboard column {name!r} takes text, got {value!r}")
    if name in _FLOAT_COLUMNS:
        value = float(value)
        return None if math.isnan(value) else value
    if name in _INT_COLUMNS and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"leaderboard column {name!r} takes an integer, got {value!r}")
        return int(value)
    return value


def _derive(row: dict[str, Any]) -> None:
    """Fill the columns that follow from others when the caller left them out."""
    plan = row.get("plan")
    if isinstance(plan, str):
        plan = json.loads(_to_json("plan", plan))
    if isinstance(plan, Mapping):
        for name in ("ratios", "kernels"):
            if row.get(name) is None and name in plan:
                row[name] = plan[name]
    if row.get("macs_fraction") is None and row.get("macs") is not None and row.get("teacher_macs"):
        row["macs_fraction"] = row["macs"] / row["teacher_macs"]
    if row.get("time") is None:
        row["time"] = dt.datetime.now(_UTC)


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown leaderboard column(s) {', '.join(unknown)}")
    missing = [name for name in _REQUIRED if row.get(name) is None]
    if missing:
        raise ValueError(f"leaderboard row lacks {', '.join(missing)}")
    if row["kind"] not in KINDS:
        raise ValueError(f"leaderboard kind {row['kind']!r} is not one of {', '.join(KINDS)}")
    if row["status"] not in STATUSES:
        raise ValueError(f"leaderboard status {row['status']!r} is not one of {', '.join(STATUSES)}")
    full = dict(row)
    _derive(full)
    return {name: _normalize_value(name, full.get(name)) for name in COLUMNS}
