"""Text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prunetune.structure.measure import Measurement

__all__ = ["format_table", "si", "side_by_side"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the rest right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = [str(c) for c in cells]
        return "  ".join([first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:])])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def si(value: float) -> str:
    """``value`` with a G, M or k suffix, two decimals (whole below a thousand)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _fraction(student: float, teacher: float) -> str:
    return f"{100.0 * student / teacher:.1f}%" if teacher else "-"


def side_by_side(teacher: Measurement, student: Measurement) -> str:
    """Teacher and student measurements in one table, with the student as a share of the teacher."""
    rows = [
        ("test accuracy (%)", f"{teacher.accuracy:.2f}", f"{student.accuracy:.2f}",
         f"{student.accuracy - teacher.accuracy:+.2f} pts"),
        ("MACs", si(teacher.macs), si(student.macs), _fraction(student.macs, teacher.macs)),
        ("params", si(teacher.params), si(student.params), _fraction(student.params, teacher.params)),
        ("CPU latency b1 (ms)", f"{teacher.latency_b1_ms:.2f}", f"{student.latency_b1_ms:.2f}",
         f"{teacher.latency_b1_ms / student.latency_b1_ms:.2f}x faster"),
        ("CPU latency b256 (ms)", f"{teacher.latency_b256_ms:.1f}", f"{student.latency_b256_ms:.1f}",
         f"{teacher.latency_b256_ms / student.latency_b256_ms:.2f}x faster"),
        ("file size", si(teacher.file_bytes) + "B", si(student.file_bytes) + "B",
         _fraction(student.file_bytes, teacher.file_bytes)),
        ("weight sparsity", f"{100 * teacher.sparsity:.1f}%", f"{100 * student.sparsity:.1f}%", ""),
    ]
    return format_table(("", "teacher", "student", "student vs teacher"), rows)
