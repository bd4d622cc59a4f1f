"""Errors that reach the user as one line: a mistake (exit code 2) or a training run that
diverged."""

from __future__ import annotations

__all__ = ["TrainingDiverged", "UsageError"]


class UsageError(Exception):
    """A user mistake: bad option, unknown name, missing file, mismatched checkpoint.

    The message is one line saying what is wrong and what is valid. The CLI prints it and
    exits with code 2; nothing is written.
    """


class TrainingDiverged(Exception):
    """Training produced a non-finite loss, weights or validation metrics.

    The message is one line saying what became non-finite and where (``loss became NaN at
    step 12 (epoch 2 of distill; lower --lr?)``), so it reads well as the last line of a
    traceback, which is what a search trial's leaderboard row keeps as its error. Raised
    before the epoch's metrics are reported; nothing diverged is written.
    """
