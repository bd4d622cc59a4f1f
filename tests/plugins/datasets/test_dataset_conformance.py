"""Every built-in dataset passes the shared dataset conformance suite, on tiny files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from prunetune.components.data import DatasetSource
from prunetune.plugins.datasets.cifar10 import Cifar10Dataset
from prunetune.plugins.datasets.fashion_mnist_demo import FashionMnistDemo
from prunetune.plugins.datasets.idx import IdxDataset
from prunetune.plugins.datasets.parquet import ParquetDataset
from prunetune.testing.datasets import DatasetConformance

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Writer = Callable[[Path, Arrays], object]


def _changed(arrays: Arrays) -> Arrays:
    """``arrays`` with one pixel of the last training image one step brighter."""
    train_x = arrays[0].copy()
    train_x[-1].flat[-1] += 1  # uint8 wraps at 255: still a change
    return train_x, *arrays[1:]


class _FileConformance(DatasetConformance):
    """Writes the tiny data set (and its changed copy) on first use, with a conftest writer."""

    arrays: Arrays
    write: Writer

    def _folder(self, changed: bool) -> Path:
        folder = self.tmp_path / ("changed" if changed else "data")
        if not folder.exists():
            self.write(folder, _changed(self.arrays) if changed else self.arrays)
        return folder

    def make_changed_source(self) -> DatasetSource:
        return self.source(self._folder(changed=True))

    def make_source(self) -> DatasetSource:
        return self.source(self._folder(changed=False))

    def source(self, folder: Path) -> DatasetSource:
        raise NotImplementedError


class TestFashionMnistDemo(DatasetConformance):
    def make_source(self) -> DatasetSource:
        return FashionMnistDemo(FashionMnistDemo.Config(limit=60))

    def make_changed_source(self) -> DatasetSource:
        # The bundled file is fixed: a longer prefix is other training data.
        return FashionMnistDemo(FashionMnistDemo.Config(limit=61))


class TestIdx(_FileConformance):
    @pytest.fixture(autouse=True)
    def _data(self, grey_arrays: Arrays, write_idx_folder: Writer) -> None:
        self.arrays, self.write = grey_arrays, write_idx_folder

    def source(self, folder: Path) -> DatasetSource:
        return IdxDataset(IdxDataset.Config(path=str(folder)))


class TestParquet(_FileConformance):
    @pytest.fixture(autouse=True)
    def _data(self, grey_arrays: Arrays, write_parquet_files: Writer) -> None:
        self.arrays, self.write = grey_arrays, write_parquet_files

    def source(self, folder: Path) -> DatasetSource:
        config = ParquetDataset.Config(
            train=str(folder / "train.parquet"), test=str(folder / "test.parquet"), shape=(1, 6, 5)
        )
        return ParquetDataset(config)


class TestCifar10(_FileConformance):
    @pytest.fixture(autouse=True)
    def _data(self, cifar_arrays: Arrays, write_cifar_folder: Writer) -> None:
        self.arrays, self.write = cifar_arrays, write_cifar_folder

    def source(self, folder: Path) -> DatasetSource:
        return Cifar10Dataset(Cifar10Dataset.Config(path=str(folder)))
