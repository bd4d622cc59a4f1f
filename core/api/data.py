"""A Python caller's data as the jobs take it: tensors, a ``Dataset`` or a ``DataLoader`` -> :class:`DataSplits`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from prunetune.components.data import DataSplits, fingerprint_tensors, split_validation
from prunetune.errors import UsageError

__all__ = ["DataLike", "as_tensors", "make_splits"]

#: What the API accepts as one split.
DataLike = Any  # tuple[Tensor, Tensor] | Dataset | DataLoader


def _pairs(batches: Any, what: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    xs, ys = [], []
    for item in batches:
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise UsageError(f"{what} must yield (image, label) pairs, got {type(item).__name__}")
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    return xs, ys


def as_tensors(data: DataLike, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [N, C, H, W] float32, labels [N] int64)`` of one split.

    Raises:
        UsageError: ``data`` is none of the accepted kinds, is empty, or its images and
            labels do not match.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    elif isinstance(data, DataLoader):
        xs, ys = _pairs(data, what)
        x, y = (torch.cat(xs), torch.cat(ys)) if xs else (torch.empty(0), torch.empty(0))
    elif isinstance(data, Dataset) or (isinstance(data, Sequence) and not isinstance(data, (str, bytes))):
        xs, ys = _pairs((data[i] for i in range(len(data))), what)
        x, y = (torch.stack(xs), torch.stack(ys)) if xs else (torch.empty(0), torch.empty(0))
    else:
        raise UsageError(f"{what} must be (images, labels) tensors, a torch Dataset or a DataLoader, "
                         f"got {type(data).__name__}")
    if x.dim() == 3:  # [N, H, W]: one channel
        x = x.unsqueeze(1)
    if len(x) == 0 or x.dim() != 4:
        raise UsageError(f"{what} must hold images of shape [N, C, H, W] (N > 0), got {tuple(x.shape)}")
    if y.dim() != 1 or len(y) != len(x) or y.is_floating_point():
        raise UsageError(f"{what} must hold one integer label per image, got labels of shape {tuple(y.shape)} "
                         f"for {len(x)} images")
    return x.float().contiguous(), y.long().contiguous()


def make_splits(train: DataLike, val: DataLike | None, test: DataLike | None, *, seed: int,
                val_fraction: float, num_classes: int | None = None) -> DataSplits:
    """The caller's splits: ``val`` held out of ``train`` (seeded) when not given, and ``test``
    the validation split when not given. Classes: ``num_classes``, else the largest label + 1.

    Raises:
        UsageError: a split is not data (see :func:`as_tensors`), the splits' images differ in
            shape, or a label is out of range.
    """
    train_x, train_y = as_tensors(train, "train")
    if val is None:
        train_x, train_y, val_x, val_y = split_validation(train_x, train_y, seed, val_fraction)
    else:
        val_x, val_y = as_tensors(val, "val")
    test_x, test_y = as_tensors(test, "test") if test is not None else (val_x, val_y)
    for name, x in (("val", val_x), ("test", test_x)):
        if x.shape[1:] != train_x.shape[1:]:
            raise UsageError(f"{name} images are {tuple(x.shape[1:])}, train images {tuple(train_x.shape[1:])}")
    labels = torch.cat([train_y, val_y, test_y])
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise UsageError(f"labels must be in [0, {classes}), got {int(labels.min())} to {int(labels.max())}")
    return DataSplits(train_x, train_y, val_x, val_y, test_x, test_y, classes,
                      fingerprint_tensors(train_x, train_y, val_x, val_y, test_x, test_y))
