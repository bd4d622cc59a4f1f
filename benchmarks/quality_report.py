"""The quality benchmark's tables and the issue's targets, from its stored results."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from prunetune.results.report import format_table

__all__ = ["ACCURACY_TARGETS", "COST_TARGETS", "METHODS", "TEACHERS", "accuracy_verdict", "cost_verdict", "mean_of", "spread", "table", "verdicts"]


TEACHERS = ("resnet", "mobilenet", "vgg", "benchmarks.mixnet:mixnet")
METHODS = {"a": "TP + fine-tune", "b": "TP + KD", "c": "TP + KD, equal compute", "d": "prunetune search + compress",
           "e": "d, warm-started from its trial"}
def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {sd:.2f} ({min(values):.2f}–{max(values):.2f})"


def table(results: list[dict[str, Any]], teacher: dict[str, Any]) -> str:
    header = ("method", "budget", "test acc % (mean ± sd, range)", "MACs", "params", "b1 (ms)", "b256 (ms)",
              "wall (s)")
    rows = [("teacher", "-", f"{teacher['test_accuracy']:.2f}", f"{teacher['macs'] / 1e6:.2f}M (100%)",
             f"{teacher['params'] / 1e3:.1f}k", f"{teacher['latency_b1_ms']:.2f}", f"{teacher['latency_b256_ms']:.1f}",
             "-")]
    for budget in sorted({r["budget"] for r in results}, reverse=True):
        for method, label in METHODS.items():
            group = [r for r in results if r["budget"] == budget and r["method"] == method]
            if not group:
                continue
            mean = lambda key: statistics.mean(r[key] for r in group)  # noqa: E731
            rows.append((f"{method}. {label}", f"{budget:.0%}", spread([r["test_accuracy"] for r in group]),
                         f"{mean('macs') / 1e6:.2f}M ({100 * mean('macs') / teacher['macs']:.1f}%)",
                         f"{mean('params') / 1e3:.1f}k", f"{mean('latency_b1_ms'):.2f}",
                         f"{mean('latency_b256_ms'):.1f}", f"{mean('wall_seconds'):.0f}"))
    return format_table(header, rows)


def mean_of(results: list[dict[str, Any]], teacher: str, method: str, budget: float, key: str) -> float | None:
    values = [r[key] for r in results
              if (r["teacher"], r["method"]) == (teacher, method) and abs(r["budget"] - budget) < 1e-9]
    return statistics.mean(values) if values else None


# The accuracy targets: (budget, other, least d - other averaged over the teachers).
ACCURACY_TARGETS = ((0.25, "b", 0.5), (0.25, "c", 0.0), (0.25, "teacher", -0.3), (0.10, "b", 1.0))
# Its cost targets: (key, most d / b on every teacher and budget).
COST_TARGETS = (("latency_b256_ms", 1.0), ("wall_seconds", 3.0))


def accuracy_verdict(results: list[dict[str, Any]], teachers: dict[str, dict[str, Any]], budget: float,
                     other: str, least: float) -> str | None:
    """d's test accuracy minus ``other``'s (a method, or the teacher), averaged over teachers."""
    gaps = {}
    for name, row in teachers.items():
        d = mean_of(results, name, "d", budget, "test_accuracy")
        base = row["test_accuracy"] if other == "teacher" else mean_of(results, name, other, budget, "test_accuracy")
        if d is not None and base is not None:
            gaps[name] = d - base
    if not gaps:
        return None
    mean = statistics.mean(gaps.values())
    detail = ", ".join(f"{name} {gap:+.2f}" for name, gap in gaps.items())
    return (f"{budget:.0%} MACs: d - {other} = {mean:+.2f} pts averaged over {len(gaps)} teachers ({detail}); "
            f"target >= {least:+g}: {'met' if mean >= least else 'NOT met'}")


def cost_verdict(results: list[dict[str, Any]], teachers: Iterable[str], key: str, most: float,
                 threads: int) -> str | None:
    """The worst ratio of d's ``key`` to b's over teachers and budgets."""
    ratios = {}
    for name in teachers:
        for budget in sorted({r["budget"] for r in results}, reverse=True):
            d, b = (mean_of(results, name, m, budget, key) for m in "db")
            if d is not None and b is not None:
                ratios[name, budget] = d / b
    if not ratios:
        return None
    (name, budget), worst = max(ratios.items(), key=lambda item: item[1])
    cores = f" (measured on {threads} threads; the target is on 2)" if key == "wall_seconds" and threads != 2 else ""
    return (f"{key} d/b: worst {worst:.2f} ({name} {budget:.0%}), mean {statistics.mean(ratios.values()):.2f} over "
            f"{len(ratios)} teacher-budgets; target <= {most:g} on every one{cores}: "
            f"{'met' if worst <= most else 'NOT met'}")


def verdicts(results: list[dict[str, Any]], teachers: dict[str, dict[str, Any]], threads: int) -> list[str]:
    """The issue's targets, each with the numbers it rests on."""
    lines = [accuracy_verdict(results, teachers, budget, other, least) for budget, other, least in ACCURACY_TARGETS]
    lines += [cost_verdict(results, teachers, key, most, threads) for key, most in COST_TARGETS]
    missing = [t for t in TEACHERS if t not in teachers]
    if missing:
        lines.append(f"incomplete: the issue's verdict needs all four teachers; missing {', '.join(missing)}")
    return [line for line in lines if line]
