"""Errors that reach the user as one line and exit code 2."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A user mistake: bad option, unknown name, missing file, mismatched checkpoint.

    The message is one line saying what is wrong and what is valid. The CLI prints it and
    exits with code 2; nothing is written.
    """
