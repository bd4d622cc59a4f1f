from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prunetune.results.plot import pareto_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"run_id": "r1", "trial_id": f"t{i}", "kind": "trial", "status": "ok",
         "macs": (i + 1) * 400_000, "val_accuracy": 70.0 + 3 * i - (i % 3) * 4}
        for i in range(8)
    ]
    rows.append({"run_id": "r1", "trial_id": "t8", "kind": "trial", "status": "error", "macs": None, "val_accuracy": None})
    rows.append({"run_id": "r1", "trial_id": "final", "kind": "final", "status": "ok", "macs": 2_000_000,
                 "val_accuracy": 99.0})
    return rows


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_plain_plot(tmp_path: Path) -> None:
    out = pareto_png(_rows(), tmp_path / "run" / "pareto.png")
    assert out == tmp_path / "run" / "pareto.png"
    _assert_png(out)


def test_plot_with_chosen_student_and_teacher(tmp_path: Path) -> None:
    out = pareto_png(_rows(), tmp_path / "pareto.png", chosen=["t4"], teacher={"macs": 40_000_000, "val_accuracy": 88.0})
    _assert_png(out)
    _assert_png(pareto_png(_rows(), tmp_path / "pair.png", chosen=["t4", "t7"], teacher=(40_000_000, 88.0)))


def test_plot_overwrites_and_takes_other_axes(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    path.write_bytes(b"old")
    _assert_png(pareto_png(_rows(), path, x="macs", y="val_accuracy"))
    rows = [{**r, "macs_fraction": None if r["macs"] is None else r["macs"] / 4e6} for r in _rows()]
    _assert_png(pareto_png(rows, path, x="macs_fraction"))


def test_plot_without_finished_trials(tmp_path: Path) -> None:
    rows = [r for r in _rows() if r["status"] == "error"]
    _assert_png(pareto_png(rows, tmp_path / "empty.png"))


def test_plot_refuses_unknown_choices_and_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="t8"):
        pareto_png(_rows(), tmp_path / "p.png", chosen=["t8"])  # an error trial is not drawn
    with pytest.raises(ValueError, match="unknown leaderboard column 'flops'"):
        pareto_png(_rows(), tmp_path / "p.png", x="flops")
    assert not (tmp_path / "p.png").exists()
