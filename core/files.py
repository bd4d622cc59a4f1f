"""Writing files so that a crash never leaves a half-written one in place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = ["save_atomically", "write_text_atomically"]


def save_atomically(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` ``obj`` to a temporary file beside ``path``, then rename it into place."""
    _write_atomically(path, lambda f: torch.save(obj, f))


def write_text_atomically(text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, then rename it into place."""
    _write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def _write_atomically(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
