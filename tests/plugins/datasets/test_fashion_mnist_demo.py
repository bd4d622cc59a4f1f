"""The bundled ``fashion_mnist_demo`` data: its file and the dataset reading it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from prunetune.errors import UsageError
from prunetune.plugins.datasets import fashion_mnist_demo
from prunetune.plugins.datasets.fashion_mnist_demo import FashionMnistDemo

BUNDLED = Path(fashion_mnist_demo.__file__).parent / "data" / "fashion_mnist_demo.parquet"


def test_bundled_file_is_small_and_balanced() -> None:
    assert BUNDLED.is_file()
    assert BUNDLED.stat().st_size <= 5 * 1024 * 1024
    table = pq.read_table(BUNDLED, columns=["label", "split"])
    labels = table["label"].to_numpy()
    split = np.asarray(table["split"].to_pylist())
    assert (split == "train").sum() == 6000
    assert (split == "test").sum() == 1000
    assert np.bincount(labels[split == "train"]).tolist() == [600] * 10
    assert np.bincount(labels[split == "test"]).tolist() == [100] * 10


def test_bundled_file_schema_and_licence() -> None:
    schema = pq.read_schema(BUNDLED)
    assert schema.names == ["image", "label", "split"]
    assert "Zalando" in schema.metadata[b"prunetune.license"].decode()
    images = pq.read_table(BUNDLED, columns=["image"])["image"].to_pylist()
    assert {len(img) for img in images} == {28 * 28}


def test_first_rows_of_each_split_cover_every_class() -> None:
    splits = FashionMnistDemo(FashionMnistDemo.Config(limit=100)).load(0, 0.0)
    assert set(splits.train_y.tolist()) == set(range(10))
    assert set(splits.test_y.tolist()) == set(range(10))


def test_whole_demo_loads() -> None:
    splits = FashionMnistDemo(FashionMnistDemo.Config()).load(0, 0.1)
    assert (len(splits.train_x), len(splits.val_x), len(splits.test_x)) == (5400, 600, 1000)
    assert splits.input_shape == (1, 28, 28)
    assert splits.num_classes == 10


def test_missing_bundled_file_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist_demo, "FILENAME", "missing.parquet")
    with pytest.raises(UsageError, match="bundled demo data missing.parquet is missing"):
        FashionMnistDemo(FashionMnistDemo.Config()).load(0, 0.1)
