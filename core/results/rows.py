"""Leaderboard rows printed: a terminal table, CSV or JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from prunetune.errors import UsageError
from prunetune.results.report import format_table, si
from prunetune.results.schema import COLUMNS, FORMATS, JSON_COLUMNS, TABLE_COLUMNS

__all__ = ["format_rows"]


def _cell(name: str, value: Any) -> str:
    """A value as the terminal table shows it."""
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if name in ("macs", "params", "teacher_macs"):
        return si(value)
    if name == "macs_fraction":
        return f"{100 * value:.1f}%"
    if name.endswith("_accuracy") or name.endswith("_ms"):
        return f"{value:.2f}"
    if name.endswith("_seconds"):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _check_columns(columns: Sequence[str]) -> None:
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise UsageError(f"unknown leaderboard column(s) {', '.join(unknown)} (valid: {', '.join(COLUMNS)})")


def _json_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if name in JSON_COLUMNS and isinstance(value, str):
        return json.loads(value)
    return value


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, dt.datetime) else value


def format_rows(
    rows: Sequence[Mapping[str, Any]], fmt: str = "table", columns: Sequence[str] | None = None
) -> str:
    """Rows as a terminal table, CSV or JSON.

    Args:
        rows: Leaderboard rows (as :meth:`Leaderboard.rows` returns them).
        fmt: ``table`` (rounded, :data:`TABLE_COLUMNS` by default), ``csv`` or ``json``
            (every column by default; JSON columns are nested objects in ``json``; times are
            ISO 8601; nulls are empty in CSV and null in JSON).
        columns: The columns to show, in order.

    Raises:
        UsageError: An unknown format or column.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    if columns is not None:
        _check_columns(columns)
    if fmt == "table":
        cols = tuple(columns or TABLE_COLUMNS)
        return format_table(cols, [[_cell(c, r.get(c)) for c in cols] for r in rows])
    cols = tuple(columns or COLUMNS)
    if fmt == "json":
        return json.dumps([{c: _json_value(c, r.get(c)) for c in cols} for r in rows], indent=2)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(cols)
    writer.writerows([_csv_value(r.get(c)) for c in cols] for r in rows)
    return out.getvalue()
