"""The helpers every dataset plugin shares: the hold-out, normalisation and fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prunetune.components.data import split_validation
from prunetune.errors import UsageError
from prunetune.plugins.datasets._common import check_limit, existing_dir, make_splits

RNG = np.random.default_rng(0)
TRAIN_X = RNG.integers(0, 256, size=(20, 2, 3, 3), dtype=np.uint8)
TRAIN_Y = np.arange(20) % 3
TEST_X = RNG.integers(0, 256, size=(5, 2, 3, 3), dtype=np.uint8)
TEST_Y = np.arange(5) % 3


def _splits(seed: int = 0, val_fraction: float = 0.25, **kw: object):
    arrays = {"train_x": TRAIN_X, "train_y": TRAIN_Y, "test_x": TEST_X, "test_y": TEST_Y, **kw}
    return make_splits(**arrays, seed=seed, val_fraction=val_fraction)  # type: ignore[arg-type]


def test_val_and_test_use_the_training_portions_statistics() -> None:
    splits = _splits(seed=5)
    fit_x, _, val_x, _ = split_validation(
        torch.from_numpy(TRAIN_X), torch.from_numpy(TRAIN_Y), 5, 0.25
    )
    fit = fit_x.double()
    mean = fit.mean(dim=(0, 2, 3))[:, None, None]
    std = fit.std(dim=(0, 2, 3), correction=0)[:, None, None]
    torch.testing.assert_close(splits.val_x.double(), (val_x.double() - mean) / std)
    raw_test = torch.from_numpy(TEST_X).double()
    torch.testing.assert_close(splits.test_x.double(), (raw_test - mean) / std)


def test_hold_out_is_split_validation() -> None:
    splits = _splits(seed=7)
    _, fit_y, _, val_y = split_validation(
        torch.from_numpy(TRAIN_X), torch.from_numpy(TRAIN_Y), 7, 0.25
    )
    assert torch.equal(splits.train_y, fit_y)
    assert torch.equal(splits.val_y, val_y)


def test_constant_channel_is_not_divided_by_zero() -> None:
    x = TRAIN_X.copy()
    x[:, 1] = 7
    splits = _splits(train_x=x)
    assert torch.isfinite(splits.train_x).all()
    assert torch.equal(splits.train_x[:, 1], torch.zeros_like(splits.train_x[:, 1]))


def test_num_classes_from_labels_or_given() -> None:
    assert _splits().num_classes == 3
    assert make_splits(
        TRAIN_X, TRAIN_Y, TEST_X, TEST_Y, seed=0, val_fraction=0.1, num_classes=10
    ).num_classes == 10


def test_fingerprint_follows_content_seed_and_fraction() -> None:
    base = _splits().fingerprint
    assert _splits().fingerprint == base
    assert _splits(seed=1).fingerprint != base
    assert _splits(val_fraction=0.5).fingerprint != base
    changed = TEST_X.copy()
    changed[0, 0, 0, 0] ^= 1
    assert _splits(test_x=changed).fingerprint != base


def test_fraction_leaving_no_training_images() -> None:
    with pytest.raises(UsageError, match="leaves no training images out of 2"):
        _splits(train_x=TRAIN_X[:2], train_y=TRAIN_Y[:2], val_fraction=0.9)


def test_empty_split() -> None:
    with pytest.raises(UsageError, match="20 training and 0 test images"):
        _splits(test_x=TEST_X[:0], test_y=TEST_Y[:0])


@pytest.mark.parametrize("limit", [0, -1, True, "3", 2.5])
def test_check_limit_refuses(limit: object) -> None:
    with pytest.raises(ValueError, match="limit=.* is not valid"):
        check_limit(limit)  # type: ignore[arg-type]


def test_check_limit_accepts() -> None:
    check_limit(None)
    check_limit(1)


def test_existing_dir(tmp_path: Path) -> None:
    assert existing_dir(str(tmp_path), "folder") == tmp_path
    with pytest.raises(UsageError, match="no data folder given \\(set path=FOLDER\\); try x"):
        existing_dir("", "data folder", "try x")
    with pytest.raises(UsageError, match="does not exist"):
        existing_dir(str(tmp_path / "missing"), "data folder")
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is not a folder"):
        existing_dir(str(tmp_path / "file"), "data folder")
