"""The Pareto plot of a search: accuracy against cost, every trial, the front and the choice.

matplotlib is imported inside :func:`pareto_png`, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunetune.results.schema import COLUMNS
from prunetune.results.summary import pareto_front

__all__ = ["pareto_png"]

# Column -> (axis label, factor from stored units to plotted units).
_AXES: dict[str, tuple[str, float]] = {
    "macs": ("MACs (millions)", 1e-6),
    "params": ("parameters (thousands)", 1e-3),
    "macs_fraction": ("MACs (% of teacher)", 100.0),
    "val_accuracy": ("validation accuracy (%)", 1.0),
    "test_accuracy": ("test accuracy (%)", 1.0),
    "latency_b1_ms": ("CPU latency, batch 1 (ms)", 1.0),
    "latency_b256_ms": ("CPU latency, batch 256 (ms)", 1.0),
}


def _axis(column: str) -> tuple[str, float]:
    if column not in COLUMNS:
        raise ValueError(f"unknown leaderboard column {column!r}")
    return _AXES.get(column, (column, 1.0))


def _points(rows: Sequence[Mapping[str, Any]], x: str, y: str) -> list[Mapping[str, Any]]:
    return [
        r for r in rows
        if r.get("kind", "trial") == "trial" and r.get("status", "ok") == "ok"
        and r.get(x) is not None and r.get(y) is not None
    ]


def _teacher_point(teacher: Mapping[str, float] | Sequence[float], x: str, y: str) -> tuple[float, float]:
    if isinstance(teacher, Mapping):
        return float(teacher[x]), float(teacher[y])
    tx, ty = teacher
    return float(tx), float(ty)


def _title(rows: Sequence[Mapping[str, Any]], y_label: str, x_label: str) -> str:
    what = f"{y_label.split(' (')[0]} against {x_label.split(' (')[0]}"
    runs = {r.get("run_id") for r in rows}
    return f"{runs.pop()}: {what}" if len(runs) == 1 and None not in runs else what


def pareto_png(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    chosen: Sequence[str] = (),
    x: str = "macs",
    y: str = "val_accuracy",
    teacher: Mapping[str, float] | Sequence[float] | None = None,
) -> Path:
    """Draw every finished trial, the Pareto front and the chosen student(s) to a PNG.

    Only trial rows with status ok and both values are drawn; the front (higher ``y``, lower
    ``x``) is a staircase. The x axis is logarithmic when the costs span more than tenfold.
    The file is written under a temporary name and renamed into place; it works headless.

    Args:
        rows: Leaderboard rows, usually one run's.
        path: The PNG to write; its folder is created.
        chosen: Trial ids to mark with a labelled star.
        x: The cost column (MACs are plotted in millions).
        y: The accuracy column, %.
        teacher: The teacher's point in stored units (MACs, %), drawn as a diamond: a mapping
            with the ``x`` and ``y`` columns (like a row), or an ``(x, y)`` pair.

    Returns:
        The path written.

    Raises:
        ValueError: An unknown column, or a chosen trial id that no drawn row has.
    """
    # The Figure API draws with Agg without pyplot, so the process-wide backend (a user's
    # notebook, say) is left alone and concurrent calls share no global state.
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    x_label, x_scale = _axis(x)
    y_label, y_scale = _axis(y)
    points = _points(rows, x, y)
    by_id = {r.get("trial_id"): r for r in points}
    missing = [t for t in chosen if t not in by_id]
    if missing:
        raise ValueError(f"chosen trial(s) {', '.join(missing)} have no finished row with {x} and {y}")

    fig = Figure(figsize=(7.0, 4.5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    xs = [x_scale * r[x] for r in points]
    ax.scatter(xs, [y_scale * r[y] for r in points], s=18, alpha=0.5, color="tab:blue",
               label=f"trials ({len(points)})")
    front = pareto_front(points, maximize=y, minimize=x)
    if front:
        fx, fy = [x_scale * r[x] for r in front], [y_scale * r[y] for r in front]
        ax.step(fx, fy, where="post", color="tab:orange", linewidth=1.5)
        ax.scatter(fx, fy, s=36, color="tab:orange", edgecolors="black", linewidths=0.5, zorder=3,
                   label=f"Pareto front ({len(front)})")
    for i, trial_id in enumerate(chosen):
        cx, cy = x_scale * by_id[trial_id][x], y_scale * by_id[trial_id][y]
        ax.scatter([cx], [cy], marker="*", s=260, color="gold", edgecolors="black", zorder=4,
                   label="chosen" if i == 0 else None)
        ax.annotate(str(trial_id), (cx, cy), xytext=(6, 6), textcoords="offset points", fontsize=8)
    if teacher is not None:
        tx, ty = _teacher_point(teacher, x, y)
        tx, ty = x_scale * tx, y_scale * ty
        xs.append(tx)
        ax.scatter([tx], [ty], marker="D", s=50, color="black", zorder=4, label="teacher")
    if not points:
        ax.text(0.5, 0.5, "no finished trials", transform=ax.transAxes, ha="center", va="center")
    positive = [v for v in xs if v > 0]
    if positive and max(positive) > 10 * min(positive):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 2 rather than 2x10^0
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(_title(rows, y_label, x_label))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, Path(path))


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
