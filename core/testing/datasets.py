"""A conformance suite for dataset plugins.

Subclass :class:`DatasetConformance` in a test module, name the subclass ``Test...`` and
implement :meth:`~DatasetConformance.make_source` and
:meth:`~DatasetConformance.make_changed_source`; pytest then runs every check on your dataset.
A plugin that reads files writes a tiny data set (a few dozen distinct images) under
``self.tmp_path``, a fresh folder per test::

    from prunetune.testing.datasets import DatasetConformance

    class TestMyDataset(DatasetConformance):
        def make_source(self):
            write_tiny_files(self.tmp_path / "data", changed=False)
            return MyDataset(MyDataset.Config(path=str(self.tmp_path / "data")))

        def make_changed_source(self):
            write_tiny_files(self.tmp_path / "changed", changed=True)  # one pixel differs
            return MyDataset(MyDataset.Config(path=str(self.tmp_path / "changed")))

The images must be distinct (the hold-out is checked by comparing rows), and the training set
large enough that :attr:`~DatasetConformance.val_fraction` of it is a few images.
"""

from __future__ import annotations

import abc
from pathlib import Path

import pytest
import torch

from prunetune.components.data import DatasetSource, DataSplits
from prunetune.testing.contract import check_component_contract, scramble_global_rngs

__all__ = ["DatasetConformance", "same_images_up_to_normalisation"]

_FIELDS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


def same_images_up_to_normalisation(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-4) -> bool:
    """Whether ``[N, C, H, W]`` images ``b`` are ``a`` with each channel scaled by a positive
    factor and shifted: the same images in the same order, normalised with other statistics."""
    if a.shape != b.shape:
        return False
    for ca, cb in zip(a.double().transpose(0, 1), b.double().transpose(0, 1), strict=True):
        da, db = ca.flatten() - ca.mean(), cb.flatten() - cb.mean()
        if float(da @ da) < 1e-12:
            if float(db.abs().max()) > atol:
                return False
            continue
        scale = float(da @ db) / float(da @ da)
        if scale <= 0 or float((db - scale * da).abs().max()) > atol * max(1.0, float(db.abs().max())):
            return False
    return True


def _rows(x: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in x.contiguous()]


class DatasetConformance(abc.ABC):
    """Checks every dataset plugin must pass; subclass it as ``Test...`` and implement the two
    factories.

    Attributes:
        val_fraction: The share held out as validation in the checks.
        tmp_path: A fresh folder for the test's files (set before each check runs).
    """

    val_fraction: float = 0.25
    tmp_path: Path

    @pytest.fixture(autouse=True)
    def _conformance_tmp_path(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    @abc.abstractmethod
    def make_source(self) -> DatasetSource:
        """A fresh source of the tiny data set under test (called several times per check)."""

    @abc.abstractmethod
    def make_changed_source(self) -> DatasetSource:
        """A source of the same kind over data that differs from :meth:`make_source`'s in its
        training images (one pixel of one image is enough)."""

    def _load(self, seed: int = 0, val_fraction: float | None = None) -> DataSplits:
        fraction = self.val_fraction if val_fraction is None else val_fraction
        return self.make_source().load(seed, fraction)

    def test_declares_config_and_description(self) -> None:
        check_component_contract(self.make_source(), DatasetSource, "dataset")

    def test_load_gives_typed_splits(self) -> None:
        splits = self._load()
        assert isinstance(splits, DataSplits)
        assert isinstance(splits.num_classes, int) and splits.num_classes >= 2
        assert isinstance(splits.fingerprint, str) and splits.fingerprint
        shape = tuple(splits.train_x.shape[1:])
        assert len(shape) == 3 and all(s > 0 for s in shape), f"images are {shape}, not [C, H, W]"
        for name in ("train", "val", "test"):
            x, y = getattr(splits, f"{name}_x"), getattr(splits, f"{name}_y")
            assert len(x) > 0, f"{name} is empty"
            assert x.dtype == torch.float32, f"{name}_x is {x.dtype}"
            assert tuple(x.shape[1:]) == shape, f"{name}_x is {tuple(x.shape)}, train images {shape}"
            assert torch.isfinite(x).all(), f"{name}_x has NaN or infinite values"
            assert y.dtype == torch.int64, f"{name}_y is {y.dtype}"
            assert tuple(y.shape) == (len(x),), f"{name}_y is {tuple(y.shape)} for {len(x)} images"
            low, high = int(y.min()), int(y.max())
            assert 0 <= low and high < splits.num_classes, f"{name}_y spans {low}..{high}"

    def test_validation_is_the_fraction_of_the_training_data(self) -> None:
        whole, held = self._load(val_fraction=0.0), self._load()
        assert len(whole.val_x) == 0, "val_fraction=0 must hold nothing out"
        n = len(whole.train_x)
        assert len(held.train_x) + len(held.val_x) == n, "validation must come out of the training data"
        assert abs(len(held.val_x) - self.val_fraction * n) <= 1, (
            f"{len(held.val_x)} of {n} images held out for val_fraction={self.val_fraction}")
        counts = torch.bincount(torch.cat([held.train_y, held.val_y]), minlength=held.num_classes)
        assert torch.equal(counts, torch.bincount(whole.train_y, minlength=whole.num_classes)), (
            "train + val must hold the training labels, each as often")
        assert len(held.test_x) == len(whole.test_x), "the hold-out must leave test alone"

    def test_train_and_val_are_disjoint(self) -> None:
        splits = self._load(seed=1)
        train = _rows(splits.train_x)
        assert len(set(train)) == len(train), "make_source's images must be distinct"
        shared = set(train) & set(_rows(splits.val_x))
        assert not shared, f"{len(shared)} validation images are also in train"

    def test_same_seed_same_splits(self) -> None:
        scramble_global_rngs(1)
        first = self._load(seed=3)
        scramble_global_rngs(2)
        again = self._load(seed=3)
        for field in _FIELDS:
            assert torch.equal(getattr(first, field), getattr(again, field)), f"{field} differs"
        assert first.num_classes == again.num_classes
        assert first.fingerprint == again.fingerprint

    def test_another_seed_another_split(self) -> None:
        first, other = self._load(seed=3), self._load(seed=4)
        assert set(_rows(first.val_x)) != set(_rows(other.val_x)), "the seed must choose validation"
        assert first.fingerprint != other.fingerprint, (
            "the fingerprint must follow the seed: another split trains another teacher")

    def test_fingerprint_follows_the_val_fraction(self) -> None:
        assert self._load(val_fraction=0.0).fingerprint != self._load().fingerprint

    def test_fingerprint_changes_with_the_data(self) -> None:
        changed = self.make_changed_source().load(0, self.val_fraction)
        assert changed.fingerprint != self._load().fingerprint

    def test_test_split_is_untouched_by_the_seed(self) -> None:
        # Values may differ where a plugin normalises with statistics of the seeded training
        # portion (the built-ins do); images, order and labels may not.
        first, other = self._load(seed=3), self._load(seed=4)
        assert torch.equal(first.test_y, other.test_y), "test labels differ between seeds"
        assert same_images_up_to_normalisation(first.test_x, other.test_x), (
            "test images differ between seeds beyond a per-channel normalisation")
        whole, whole_other = self._load(seed=3, val_fraction=0.0), self._load(seed=4, val_fraction=0.0)
        torch.testing.assert_close(whole.test_x, whole_other.test_x, atol=1e-5, rtol=0)
        assert torch.equal(whole.test_y, whole_other.test_y)
