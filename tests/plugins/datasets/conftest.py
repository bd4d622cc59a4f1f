"""Tiny on-disk datasets in every supported format, and a check shared by the dataset tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from prunetune.components.data import DataSplits

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _unique_images(n: int, shape: tuple[int, ...], offset: int, seed: int) -> np.ndarray:
    """Random uint8 images whose first two pixels spell their index, so none repeats."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = x.reshape(n, -1)
    index = np.arange(offset, offset + n)
    flat[:, 0], flat[:, 1] = index // 256, index % 256
    return x


def _arrays(shape: tuple[int, ...], n_train: int, n_test: int, classes: int) -> Arrays:
    return (
        _unique_images(n_train, shape, 0, seed=1),
        np.arange(n_train) % classes,
        _unique_images(n_test, shape, n_train, seed=2),
        np.arange(n_test) % classes,
    )


@pytest.fixture
def grey_arrays() -> Arrays:
    """40 training and 12 test images, 1x6x5 (non-square catches H/W mix-ups), 4 classes."""
    return _arrays((1, 6, 5), 40, 12, 4)


def _write_idx(path: Path, magic: int, array: np.ndarray, gz: bool = False) -> Path:
    data = struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def write_idx() -> Callable[..., Path]:
    """``write_idx(path, magic, array, gz=False)`` writes one IDX file and returns its path."""
    return _write_idx


def _write_idx_folder(folder: Path, arrays: Arrays) -> Path:
    train_x, train_y, test_x, test_y = arrays
    folder.mkdir(parents=True)
    _write_idx(folder / "train-images-idx3-ubyte", 2051, train_x[:, 0], gz=True)
    _write_idx(folder / "train-labels-idx1-ubyte", 2049, train_y.astype(np.uint8), gz=True)
    _write_idx(folder / "t10k-images-idx3-ubyte", 2051, test_x[:, 0])
    _write_idx(folder / "t10k-labels-idx1-ubyte", 2049, test_y.astype(np.uint8))
    return folder


@pytest.fixture
def write_idx_folder() -> Callable[[Path, Arrays], Path]:
    """``write_idx_folder(folder, arrays)`` writes the four IDX files of grey ``arrays``
    (training files gzipped, test files plain) into a new ``folder`` and returns it."""
    return _write_idx_folder


@pytest.fixture
def idx_folder(tmp_path: Path, grey_arrays: Arrays) -> Path:
    """The four IDX files of :func:`grey_arrays`, training files gzipped, test files plain."""
    return _write_idx_folder(tmp_path / "idx", grey_arrays)


@pytest.fixture
def cifar_arrays() -> Arrays:
    """100 training (five batches of 20) and 20 test images, 3x32x32, 10 classes."""
    return _arrays((3, 32, 32), 100, 20, 10)


def _write_cifar_folder(folder: Path, arrays: Arrays) -> Path:
    train_x, train_y, test_x, test_y = arrays
    folder.mkdir(parents=True)
    per_batch = len(train_x) // 5
    batches = [(f"data_batch_{i + 1}", slice(per_batch * i, per_batch * (i + 1))) for i in range(5)]
    for name, rows in batches:
        _pickle_batch(folder / name, train_x[rows], train_y[rows], protocol=2)
    _pickle_batch(folder / "test_batch", test_x, test_y, protocol=pickle.HIGHEST_PROTOCOL)
    return folder


@pytest.fixture
def write_cifar_folder() -> Callable[[Path, Arrays], Path]:
    """``write_cifar_folder(folder, arrays)`` pickles ``arrays`` (3x32x32, training images a
    multiple of 5) into a new ``folder`` like CIFAR-10's five training batches and test batch."""
    return _write_cifar_folder


@pytest.fixture
def cifar_folder(tmp_path: Path, cifar_arrays: Arrays) -> Path:
    """A ``cifar-10-batches-py`` folder of :func:`cifar_arrays`, pickled like the original."""
    return _write_cifar_folder(tmp_path / "cifar-10-batches-py", cifar_arrays)


def _pickle_batch(path: Path, x: np.ndarray, y: np.ndarray, protocol: int) -> None:
    batch = {
        b"batch_label": b"testing batch",
        b"labels": [int(v) for v in y],
        b"data": x.reshape(len(x), -1).copy(),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(x))],
    }
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def _write_parquet_files(folder: Path, arrays: Arrays) -> tuple[Path, Path]:
    train_x, train_y, test_x, test_y = arrays
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "train.parquet", folder / "test.parquet"
    for path, x, y in zip(paths, (train_x, test_x), (train_y, test_y)):
        table = pa.table({"image": [img.tobytes() for img in x], "label": y.astype(np.int64)})
        pq.write_table(table, path)
    return paths


@pytest.fixture
def write_parquet_files() -> Callable[[Path, Arrays], tuple[Path, Path]]:
    """``write_parquet_files(folder, arrays)`` writes ``folder/train.parquet`` and
    ``folder/test.parquet`` (flat binary pixels + labels) and returns their paths."""
    return _write_parquet_files


@pytest.fixture
def parquet_files(tmp_path: Path, grey_arrays: Arrays) -> tuple[Path, Path]:
    """``(train, test)`` Parquet files of :func:`grey_arrays`: flat binary pixels + labels."""
    return _write_parquet_files(tmp_path, grey_arrays)


def _check_splits(
    splits: DataSplits, *, n_train: int, n_test: int, shape: tuple[int, int, int],
    val_fraction: float, num_classes: int,
) -> None:
    n_val = round(n_train * val_fraction)
    assert splits.train_x.shape == (n_train - n_val, *shape)
    assert splits.val_x.shape == (n_val, *shape)
    assert splits.test_x.shape == (n_test, *shape)
    assert splits.input_shape == shape
    assert splits.num_classes == num_classes
    for x, y in ((splits.train_x, splits.train_y), (splits.val_x, splits.val_y),
                 (splits.test_x, splits.test_y)):
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert y.shape == (len(x),)
        assert int(y.min()) >= 0 and int(y.max()) < num_classes
    channel_mean = splits.train_x.mean(dim=(0, 2, 3))
    channel_std = splits.train_x.std(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(channel_mean, torch.zeros(shape[0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(channel_std, torch.ones(shape[0]), atol=1e-4, rtol=0)
    assert len(splits.fingerprint) == 16


@pytest.fixture
def check_splits() -> Callable[..., None]:
    """``check_splits(splits, n_train=, n_test=, shape=, val_fraction=, num_classes=)``.

    Asserts the sizes (validation held out of ``n_train``), dtypes, label range and that the
    training portion is normalised to mean 0 and standard deviation 1 per channel.
    """
    return _check_splits
