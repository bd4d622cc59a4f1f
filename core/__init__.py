"""prunetune: compress a trained CNN into a smaller, faster student.

Importing this package stays cheap: Ray and Optuna are imported only where a search runs.
"""

from __future__ import annotations

from prunetune.host.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl"]

__version__ = "0.1.0"
