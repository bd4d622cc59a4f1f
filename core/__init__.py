"""prunetune: compress a trained CNN into a smaller, faster student.

Importing this package stays cheap: the Python API (:func:`compress`, :func:`search`,
:func:`load`) loads torch when first used, and Ray and Optuna only where a search runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunetune.host.hookspecs import hookimpl

if TYPE_CHECKING:
    from prunetune.api.calls import compress, search
    from prunetune.api.student import SearchResult, Student, load
    from prunetune.structure.plan import StudentPlan

__all__ = ["SearchResult", "Student", "StudentPlan", "__version__", "compress", "hookimpl", "load", "search"]

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first use.
_LAZY = {
    "compress": "prunetune.api.calls",
    "search": "prunetune.api.calls",
    "load": "prunetune.api.student",
    "Student": "prunetune.api.student",
    "SearchResult": "prunetune.api.student",
    "StudentPlan": "prunetune.structure.plan",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prunetune' has no attribute {name!r}")
