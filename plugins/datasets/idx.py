"""The ``idx`` dataset: a folder of MNIST-format IDX files (Fashion-MNIST, MNIST, KMNIST...)."""

from __future__ import annotations

import dataclasses
import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prunetune import hookimpl
from prunetune.components.data import DatasetSource, DataSplits
from prunetune.errors import UsageError
from prunetune.plugins.datasets._common import check_limit, existing_dir, make_splits

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = ["IdxDataset", "read_split"]

#: Where Debian's ``dataset-fashion-mnist`` package installs the four files.
DEFAULT_PATH = "/usr/share/datasets/fashion-mnist"
IMAGES_MAGIC = 2051  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # unsigned bytes, 1 dimension
_EXPECTED = (
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte, each optionally .gz"
)


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise UsageError(f"IDX folder {str(folder)!r} has no {name}[.gz] (expected {_EXPECTED})")


def _read_idx(path: Path, magic: int, ndim: int, limit: int | None) -> tuple[np.ndarray, int]:
    """The first ``limit`` items of an IDX file as uint8 and the item count of its header."""
    what = "images" if magic == IMAGES_MAGIC else "labels"
    try:
        with path.open("rb") as raw:
            # Sniff rather than trust the suffix: some mirrors keep gzip data without ".gz".
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw) if gzipped else raw as f:
                header = f.read(4 * (1 + ndim))
                if len(header) < 4 * (1 + ndim):
                    raise UsageError(f"{path} is too short to be an IDX {what} file")
                found, *dims = struct.unpack(f">{1 + ndim}I", header)
                if found != magic:
                    raise UsageError(
                        f"{path} has magic number {found}, expected {magic} "
                        f"(big-endian IDX {what} file)"
                    )
                count = dims[0] if limit is None else min(dims[0], limit)
                size = count * math.prod(dims[1:])
                data = f.read(size)
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < size:
        raise UsageError(
            f"{path} is truncated: its header announces {dims[0]} {what} but it holds "
            f"{len(data)} of the {size} bytes needed for {count}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(count, *dims[1:]), dims[0]


def read_split(
    folder: Path, prefix: str, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of an IDX folder.

    Args:
        folder: The IDX folder.
        prefix: ``"train"`` or ``"t10k"``.
        limit: Read at most this many images (the first ones).

    Returns:
        uint8 images ``[N, 1, H, W]`` and uint8 labels ``[N]``.

    Raises:
        UsageError: A file is missing, truncated or not IDX, or the counts disagree.
    """
    images_path = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    images, n_images = _read_idx(images_path, IMAGES_MAGIC, 3, limit)
    labels, n_labels = _read_idx(labels_path, LABELS_MAGIC, 1, limit)
    if n_images != n_labels:
        raise UsageError(
            f"{images_path} holds {n_images} images but {labels_path} holds {n_labels} labels"
        )
    return images[:, None, :, :], labels


class IdxDataset(DatasetSource):
    """MNIST-format IDX files from a folder (default: Debian's dataset-fashion-mnist)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``idx`` dataset.

        Attributes:
            path: Folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
                ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally
                ``.gz``).
            limit: Read at most this many images of each split (the first ones).
        """

        path: str = DEFAULT_PATH
        limit: int | None = None

        def __post_init__(self) -> None:
            check_limit(self.limit)

    def __init__(self, config: IdxDataset.Config) -> None:
        self.config = config

    def load(self, seed: int, val_fraction: float) -> DataSplits:
        """Read both splits and hold out ``val_fraction`` of the training images.

        Raises:
            UsageError: The folder or a file is missing, or a file is not valid IDX.
        """
        hint = "" if self.config.path != DEFAULT_PATH else (
            "install Debian's dataset-fashion-mnist or set path= to an IDX folder"
        )
        folder = existing_dir(self.config.path, "IDX folder", hint)
        train_x, train_y = read_split(folder, "train", self.config.limit)
        test_x, test_y = read_split(folder, "t10k", self.config.limit)
        if train_x.shape[1:] != test_x.shape[1:]:
            raise UsageError(
                f"IDX folder {str(folder)!r}: training images are {train_x.shape[2]}x"
                f"{train_x.shape[3]} but test images are {test_x.shape[2]}x{test_x.shape[3]}"
            )
        return make_splits(
            train_x, train_y, test_x, test_y, seed=seed, val_fraction=val_fraction
        )


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    """Offer the ``idx`` dataset."""
    registry.add_dataset("idx", IdxDataset)
