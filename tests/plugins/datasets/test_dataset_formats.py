"""The built-in dataset plugins, each on a tiny dataset in its own format: the images they read
are the raw ones, limits and bad options (the shared checks are in test_dataset_conformance.py)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from prunetune.components.data import DatasetSource, DataSplits
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.datasets import cifar10, fashion_mnist_demo, idx, parquet

MODULES = {
    "fashion_mnist_demo": fashion_mnist_demo,
    "idx": idx,
    "parquet": parquet,
    "cifar10": cifar10,
}


@dataclasses.dataclass
class Case:
    """A dataset plugin's options on tiny data, and the raw uint8 arrays it must yield."""

    name: str
    options: dict[str, Any]
    raw: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    num_classes: int

    def source(self, **extra: Any) -> DatasetSource:
        registry = Registry()
        MODULES[self.name].prunetune_add_components(registry)
        return registry.create("dataset", self.name, {**self.options, **extra})

    def load(self, seed: int = 0, val_fraction: float = 0.25, **extra: Any) -> DataSplits:
        return self.source(**extra).load(seed, val_fraction)


@functools.cache
def _demo_raw(limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    table = fashion_mnist_demo.read_bundled()
    out = []
    for split in ("train", "test"):
        rows = table.filter(pc.equal(table["split"], split)).slice(0, limit)
        pixels = np.frombuffer(b"".join(rows["image"].to_pylist()), dtype=np.uint8).copy()
        out += [pixels.reshape(-1, 1, 28, 28), rows["label"].to_numpy().astype(np.int64)]
    return out[0], out[1], out[2], out[3]


@pytest.fixture(params=sorted(MODULES))
def case(request: pytest.FixtureRequest) -> Case:
    name = request.param
    if name == "fashion_mnist_demo":
        return Case(name, {"limit": "100"}, _demo_raw(100), 10)
    if name == "idx":
        folder = request.getfixturevalue("idx_folder")
        return Case(name, {"path": str(folder)}, request.getfixturevalue("grey_arrays"), 4)
    if name == "parquet":
        train, test = request.getfixturevalue("parquet_files")
        options = {"train": str(train), "test": str(test), "shape": "1,6,5"}
        return Case(name, options, request.getfixturevalue("grey_arrays"), 4)
    folder = request.getfixturevalue("cifar_folder")
    return Case(name, {"path": str(folder)}, request.getfixturevalue("cifar_arrays"), 10)


def test_load_gives_normalised_float_splits(case: Case, check_splits: Callable[..., None]) -> None:
    train_x, _, test_x, _ = case.raw
    splits = case.load(seed=0, val_fraction=0.25)
    check_splits(
        splits,
        n_train=len(train_x),
        n_test=len(test_x),
        shape=tuple(train_x.shape[1:]),
        val_fraction=0.25,
        num_classes=case.num_classes,
    )


def test_content_matches_the_raw_images(case: Case) -> None:
    train_x, train_y, test_x, test_y = case.raw
    splits = case.load(val_fraction=0.0)
    raw = torch.from_numpy(train_x).double()
    mean = raw.mean(dim=(0, 2, 3))[:, None, None]
    std = raw.std(dim=(0, 2, 3), correction=0)[:, None, None]
    expected = (torch.from_numpy(test_x).double() - mean) / std
    torch.testing.assert_close(splits.test_x.double(), expected, atol=1e-4, rtol=0)
    assert torch.equal(splits.test_y, torch.from_numpy(test_y.astype(np.int64)))
    assert torch.equal(splits.train_y.bincount(), torch.from_numpy(train_y).long().bincount())


def test_split_is_seeded(case: Case) -> None:
    a, same, other = case.load(seed=3), case.load(seed=3), case.load(seed=4)
    for field in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(same, field)), field
    assert a.fingerprint == same.fingerprint
    assert not torch.equal(a.val_x, other.val_x)
    assert a.fingerprint != other.fingerprint


def test_validation_is_held_out_of_training(case: Case) -> None:
    splits = case.load(seed=1, val_fraction=0.25)
    assert len(splits.train_x) + len(splits.val_x) == len(case.raw[0])
    train_rows = {row.numpy().tobytes() for row in splits.train_x}
    assert not any(row.numpy().tobytes() in train_rows for row in splits.val_x)


def test_limit_caps_each_split(case: Case) -> None:
    splits = case.load(val_fraction=0.2, limit=10)
    assert (len(splits.train_x), len(splits.val_x), len(splits.test_x)) == (8, 2, 10)


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_bad_val_fraction_is_a_usage_error(case: Case, fraction: float) -> None:
    with pytest.raises(UsageError, match="val_fraction"):
        case.load(val_fraction=fraction)


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_bad_limit_is_a_usage_error(case: Case, limit: str) -> None:
    with pytest.raises(UsageError, match="limit"):
        case.source(limit=limit)
