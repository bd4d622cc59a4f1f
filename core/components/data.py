"""What a dataset plugin hands the pipeline: seeded train / validation / test tensors."""

from __future__ import annotations

import abc
import dataclasses
import hashlib

import torch

__all__ = ["DataSplits", "DatasetSource", "fingerprint_tensors", "split_validation"]


@dataclasses.dataclass(frozen=True)
class DataSplits:
    """Images as float32 ``[N, C, H, W]`` (normalised), labels as int64 ``[N]``.

    ``val`` is held out of the training data with a seed; ``test`` is touched only by the
    final measurement. ``fingerprint`` identifies the content (teacher caching keys on it).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    fingerprint: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)


class DatasetSource(abc.ABC):
    """A dataset plugin. Subclasses declare a frozen dataclass ``Config``."""

    @abc.abstractmethod
    def load(self, seed: int, val_fraction: float) -> DataSplits:
        """Read the data and hold out ``val_fraction`` of the training set, seeded.

        Raises:
            UsageError: the data path is missing or not in the expected format.
        """


def split_validation(
    x: torch.Tensor, y: torch.Tensor, seed: int, val_fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded random hold-out: ``(train_x, train_y, val_x, val_y)``."""
    n_val = int(round(len(x) * val_fraction))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def fingerprint_tensors(*tensors: torch.Tensor) -> str:
    """A short content hash of tensors."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
