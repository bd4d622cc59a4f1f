"""The ``cifar10`` dataset: the "python version" folder of CIFAR-10.

That folder (``cifar-10-batches-py`` from https://www.cs.toronto.edu/~kriz/cifar.html) holds
``data_batch_1`` ... ``data_batch_5`` and ``test_batch``: pickled dicts with ``b"data"``
(``N x 3072`` uint8, the red, green then blue 32x32 planes of each image) and ``b"labels"``.
The pickles are read with an unpickler that can only rebuild numpy arrays, so a tampered
file cannot run code.
"""

from __future__ import annotations

import codecs
import dataclasses
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from prunetune import hookimpl
from prunetune.components.data import DatasetSource, DataSplits
from prunetune.errors import UsageError
from prunetune.plugins.datasets._common import check_limit, existing_dir, make_splits

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = ["Cifar10Dataset", "SafeUnpickler"]

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
SHAPE = (3, 32, 32)
_SOURCE = "the python version from https://www.cs.toronto.edu/~kriz/cifar.html"


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles of protocol < 3 spell bytes as codecs.encode(str, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }
    # Pickles name the module of the numpy that wrote them: numpy.core before 2.0.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays, lists, dicts and scalars, and nothing else.

    Raises:
        UsageError: The pickle names any other global (a class or function to call).
    """

    def __init__(self, file: BinaryIO, name: str) -> None:
        # CIFAR-10 was pickled by Python 2: keep its byte strings as bytes.
        super().__init__(file, encoding="bytes")
        self._name = name
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UsageError(
                f"{self._name} asks to load {module}.{name}, refused: a CIFAR-10 batch holds "
                "only numpy arrays and lists (is it really CIFAR-10's python version?)"
            ) from None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as uint8 images ``[N, 3, 32, 32]`` and labels ``[N]``."""
    try:
        with path.open("rb") as f:
            batch = SafeUnpickler(f, str(path)).load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, IndexError, KeyError, MemoryError) as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise UsageError(f"cannot read CIFAR-10 batch {path}: {reason}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
        data.shape[1] != int(np.prod(SHAPE))
    ):
        raise UsageError(f"{path} is not a CIFAR-10 python batch (expected a dict whose "
                         "b'data' is an N x 3072 uint8 array)")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        y = np.empty(0, dtype=np.int64)
    if y.shape != (len(data),) or (len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES)):
        raise UsageError(f"{path} is not a CIFAR-10 python batch (expected b'labels' to be "
                         f"{len(data)} class ids 0-9)")
    return data.reshape(len(data), *SHAPE), y


def _read_files(
    folder: Path, names: tuple[str, ...], limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    xs, ys, count = [], [], 0
    for name in names:
        if limit is not None and count >= limit:
            break  # the first batches already hold enough images
        x, y = _read_batch(folder / name)
        xs.append(x)
        ys.append(y)
        count += len(x)
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x, y) if limit is None else (x[:limit], y[:limit])


class Cifar10Dataset(DatasetSource):
    """CIFAR-10 from its python-version folder (data_batch_1..5, test_batch)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``cifar10`` dataset.

        Attributes:
            path: The ``cifar-10-batches-py`` folder (or a folder that contains it).
            limit: Read at most this many images of each split (the first ones).
        """

        path: str = "cifar-10-batches-py"
        limit: int | None = None

        def __post_init__(self) -> None:
            check_limit(self.limit)

    def __init__(self, config: Cifar10Dataset.Config) -> None:
        self.config = config

    def _folder(self) -> Path:
        folder = existing_dir(self.config.path, "CIFAR-10 folder", f"get {_SOURCE}")
        if not (folder / TEST_FILE).exists() and (folder / "cifar-10-batches-py").is_dir():
            folder = folder / "cifar-10-batches-py"
        missing = [n for n in (*TRAIN_FILES, TEST_FILE) if not (folder / n).is_file()]
        if missing:
            raise UsageError(
                f"CIFAR-10 folder {str(folder)!r} has no {', '.join(missing)} (expected "
                f"data_batch_1..data_batch_5 and test_batch of {_SOURCE})"
            )
        return folder

    def load(self, seed: int, val_fraction: float) -> DataSplits:
        """Read the batches and hold out ``val_fraction`` of the training images.

        Raises:
            UsageError: The folder or a batch is missing, or a batch is not a CIFAR-10
                pickle (including one that asks to load anything but numpy arrays).
        """
        folder = self._folder()
        train_x, train_y = _read_files(folder, TRAIN_FILES, self.config.limit)
        test_x, test_y = _read_files(folder, (TEST_FILE,), self.config.limit)
        return make_splits(
            train_x,
            train_y,
            test_x,
            test_y,
            seed=seed,
            val_fraction=val_fraction,
            num_classes=NUM_CLASSES,
        )


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    """Offer the ``cifar10`` dataset."""
    registry.add_dataset("cifar10", Cifar10Dataset)
