"""Helpers every dataset plugin shares: option checks and turning uint8 arrays into splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from prunetune.components.data import DataSplits, fingerprint_tensors, split_validation
from prunetune.errors import UsageError

__all__ = ["check_limit", "existing_dir", "make_splits"]


def check_limit(limit: int | None) -> None:
    """Validate a per-split image cap (for a config's ``__post_init__``).

    Raises:
        ValueError: ``limit`` is not None or a positive integer.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(
            f"limit={limit!r} is not valid (expected a positive number of images per split, "
            "or none for all)"
        )


def existing_dir(path: str, what: str, hint: str = "") -> Path:
    """``path`` (``~`` expanded) if it is a folder.

    Args:
        path: The folder the user named.
        what: What should be there, e.g. ``"IDX folder"``, for the message.
        hint: Appended to the message, e.g. where to get the data.

    Raises:
        UsageError: ``path`` is empty, missing or not a folder.
    """
    suffix = f"; {hint}" if hint else ""
    if not path:
        raise UsageError(f"no {what} given (set path=FOLDER){suffix}")
    folder = Path(os.path.expanduser(path))
    if not folder.exists():
        raise UsageError(f"{what} {str(folder)!r} does not exist{suffix}")
    if not folder.is_dir():
        raise UsageError(f"{what} {str(folder)!r} is not a folder{suffix}")
    return folder


def _tensor(a: np.ndarray, dtype: type[np.generic]) -> torch.Tensor:
    # torch warns on read-only arrays (np.frombuffer); copy only those.
    return torch.from_numpy(np.require(a, dtype=dtype, requirements=["C", "W"]))


def _normalised(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() - mean[:, None, None]) / std[:, None, None]


def make_splits(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    seed: int,
    val_fraction: float,
    num_classes: int | None = None,
) -> DataSplits:
    """Hold out a seeded validation set and normalise with the training portion's statistics.

    Args:
        train_x: uint8 ``[N, C, H, W]`` training images (before the hold-out).
        train_y: Integer labels ``[N]``.
        test_x: uint8 ``[M, C, H, W]`` test images.
        test_y: Integer labels ``[M]``.
        seed: Seed of the validation hold-out.
        val_fraction: Share of ``train_x`` held out as validation, in ``[0, 1)``.
        num_classes: Fixed by the format; ``max(label) + 1`` when None.

    Returns:
        Float32 images normalised per channel with the mean and standard deviation of the
        training portion (the same values applied to validation and test), int64 labels, and
        a fingerprint of the raw content, the seed and the fraction.

    Raises:
        UsageError: A split is empty, or ``val_fraction`` is outside ``[0, 1)`` or leaves no
            training images.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction={val_fraction!r} is not valid (expected 0 <= f < 1)")
    if len(train_x) == 0 or len(test_x) == 0:
        raise UsageError(
            f"the dataset has {len(train_x)} training and {len(test_x)} test images "
            "(expected at least one of each)"
        )
    tx, sx = _tensor(train_x, np.uint8), _tensor(test_x, np.uint8)
    ty, sy = _tensor(train_y, np.int64), _tensor(test_y, np.int64)
    # The seed and fraction decide which images train the teacher, so a cached teacher must
    # not be reused across them.
    split_key = torch.frombuffer(bytearray(f"{seed}:{val_fraction!r}".encode()), dtype=torch.uint8)
    fingerprint = fingerprint_tensors(tx, ty, sx, sy, split_key)

    fit_x, fit_y, val_x, val_y = split_validation(tx, ty, seed, val_fraction)
    if len(fit_x) == 0:
        raise UsageError(
            f"val_fraction={val_fraction!r} leaves no training images out of {len(tx)}"
        )
    fit = fit_x.float()
    mean = fit.mean(dim=(0, 2, 3))
    std = fit.std(dim=(0, 2, 3), correction=0)
    # A constant channel has no spread to divide by; leave it centred only.
    std = torch.where(std > 0, std, torch.ones_like(std))
    if num_classes is None:
        num_classes = int(torch.cat([ty, sy]).max()) + 1
    return DataSplits(
        train_x=fit.sub_(mean[:, None, None]).div_(std[:, None, None]),
        train_y=fit_y,
        val_x=_normalised(val_x, mean, std),
        val_y=val_y,
        test_x=_normalised(sx, mean, std),
        test_y=sy,
        num_classes=num_classes,
        fingerprint=fingerprint,
    )
