"""The API's data: tensors, a Dataset or a DataLoader become the same splits."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from prunetune.api.data import as_tensors, make_splits
from prunetune.errors import UsageError

X = torch.randn(40, 1, 6, 6)
Y = torch.randint(0, 3, (40,))


@pytest.mark.parametrize("kind", ["tensors", "dataset", "loader", "list of pairs"])
def test_every_kind_of_data_gives_the_same_tensors(kind: str) -> None:
    data = {"tensors": (X, Y), "dataset": TensorDataset(X, Y), "loader": DataLoader(TensorDataset(X, Y), batch_size=7),
            "list of pairs": [(X[i], int(Y[i])) for i in range(len(X))]}[kind]
    x, y = as_tensors(data, "train")
    assert torch.equal(x, X) and torch.equal(y, Y)
    assert x.dtype == torch.float32 and y.dtype == torch.int64


def test_images_without_a_channel_get_one() -> None:
    x, _ = as_tensors((torch.randn(5, 6, 6), torch.zeros(5, dtype=torch.long)), "train")
    assert x.shape == (5, 1, 6, 6)


def test_without_val_a_seeded_share_of_train_is_held_out_and_test_is_val() -> None:
    a = make_splits((X, Y), None, None, seed=3, val_fraction=0.25)
    b = make_splits((X, Y), None, None, seed=3, val_fraction=0.25)
    assert len(a.val_x) == 10 and len(a.train_x) == 30
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.test_x, a.val_x)
    assert a.num_classes == int(Y.max()) + 1 and a.fingerprint == b.fingerprint


@pytest.mark.parametrize(
    ("train", "val", "classes", "message"),
    [
        ("images.npy", None, None, "must be (images, labels) tensors, a torch Dataset or a DataLoader"),
        ((X, Y[:5]), None, None, "one integer label per image"),
        ((X, Y.float()), None, None, "one integer label per image"),
        ((torch.empty(0, 1, 6, 6), torch.empty(0, dtype=torch.long)), None, None, "N > 0"),
        ((X, Y), (torch.randn(4, 1, 5, 5), Y[:4]), None, "val images are (1, 5, 5)"),
        ((X, Y), None, 2, "labels must be in [0, 2)"),
    ],
)
def test_bad_data_is_one_usage_error(train: object, val: object, classes: int | None, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        make_splits(train, val, None, seed=0, val_fraction=0.2, num_classes=classes)
