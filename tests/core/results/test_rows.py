"""Leaderboard rows printed: table, CSV and JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

import pytest

from prunetune.errors import UsageError
from prunetune.results.rows import format_rows
from prunetune.results.schema import COLUMNS, TABLE_COLUMNS
from tests.core.results.test_leaderboard import T0, row


def _board_rows() -> list[dict[str, Any]]:
    return [
        row("t0", "r1", 0, val_accuracy=81.234, macs_fraction=0.5, latency_b256_ms=12.3456, plan={"ratio": 0.5}),
        row("t1", "r1", 1, val_accuracy=None, status="error", error="CUDA out of memory, \"big\""),
    ]


def test_format_table_shows_the_compact_columns_rounded() -> None:
    text = format_rows(_board_rows(), "table")
    header, rule, first, second = text.splitlines()
    assert header.split() == list(TABLE_COLUMNS)
    assert "81.23" in first and "50.0%" in first and "1.00M" in first and "12.35" in first
    assert "error" in second and " - " in second
    assert format_rows(_board_rows(), "table", columns=["trial_id", "time"]).splitlines()[2].split() == [
        "t0", "2026-01-01T00:00:00+00:00"
    ]


def test_format_csv_parses_back() -> None:
    parsed = list(csv.DictReader(io.StringIO(format_rows(_board_rows(), "csv"))))
    assert list(parsed[0]) == list(COLUMNS)
    assert float(parsed[0]["val_accuracy"]) == 81.234
    assert parsed[1]["val_accuracy"] == "" and parsed[1]["error"] == 'CUDA out of memory, "big"'
    assert dt.datetime.fromisoformat(parsed[0]["time"]) == T0


def test_format_json_parses_back() -> None:
    parsed = json.loads(format_rows(_board_rows(), "json", columns=["trial_id", "time", "plan", "val_accuracy"]))
    assert parsed == [
        {"trial_id": "t0", "time": T0.isoformat(), "plan": {"ratio": 0.5}, "val_accuracy": 81.234},
        {"trial_id": "t1", "time": (T0 + dt.timedelta(seconds=1)).isoformat(), "plan": None, "val_accuracy": None},
    ]


def test_format_rows_refuses_unknown_formats_and_columns() -> None:
    with pytest.raises(UsageError, match="unknown format 'xml' \\(valid: table, csv, json\\)"):
        format_rows([], "xml")
    with pytest.raises(UsageError, match="unknown leaderboard column.*accuracy"):
        format_rows([], "csv", columns=["accuracy"])
