"""The ``cifar10`` dataset: the python-version folder, read without running pickled code."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prunetune.components.data import DataSplits
from prunetune.errors import UsageError
from prunetune.plugins.datasets.cifar10 import Cifar10Dataset


def _load(path: Path, limit: int | None = None) -> DataSplits:
    return Cifar10Dataset(Cifar10Dataset.Config(path=str(path), limit=limit)).load(0, 0.2)


class _Exploit:
    """Unpickling this would call ``func(*args)``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("call", ["system", "exec"])
def test_malicious_pickle_is_refused_before_running(
    cifar_folder: Path, tmp_path: Path, protocol: int, call: str
) -> None:
    marker = tmp_path / "pwned"
    exploit = (
        _Exploit(os.system, f"touch {marker}")
        if call == "system"
        else _Exploit(builtins.exec, f"open({str(marker)!r}, 'w').close()")
    )
    batch = {b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 20, b"x": exploit}
    (cifar_folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    with pytest.raises(UsageError, match=f"data_batch_1 asks to load .*{call}, refused"):
        _load(cifar_folder)
    assert not marker.exists()


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_numpy_1_pickles_are_read(cifar_folder: Path) -> None:
    # numpy 1.x (and the original CIFAR-10 files) name numpy.core, not numpy._core.
    path = cifar_folder / "test_batch"
    batch = {b"data": np.zeros((20, 3072), np.uint8), b"labels": [1] * 20}
    data = pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray\n_reconstruct" in data
    path.write_bytes(data)
    assert _load(cifar_folder).test_y.tolist() == [1] * 20


def test_parent_folder_is_accepted(cifar_folder: Path) -> None:
    assert len(_load(cifar_folder.parent).test_x) == 20


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="CIFAR-10 folder .* does not exist; get the python"):
        _load(tmp_path / "nowhere")


def test_missing_batch_is_named(cifar_folder: Path) -> None:
    (cifar_folder / "data_batch_3").unlink()
    with pytest.raises(UsageError, match="has no data_batch_3 \\(expected data_batch_1"):
        _load(cifar_folder)


def test_limit_reads_only_the_batches_it_needs(cifar_folder: Path) -> None:
    (cifar_folder / "data_batch_3").write_bytes(b"not a pickle")
    assert len(_load(cifar_folder, limit=30).train_x) == 24
    with pytest.raises(UsageError, match="cannot read CIFAR-10 batch .*data_batch_3"):
        _load(cifar_folder)


def test_truncated_pickle(cifar_folder: Path) -> None:
    path = cifar_folder / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UsageError, match="cannot read CIFAR-10 batch .*test_batch"):
        _load(cifar_folder)


@pytest.mark.parametrize(
    ("batch", "problem"),
    [
        ([1, 2, 3], "b'data' is an N x 3072 uint8 array"),
        ({b"data": np.zeros((20, 1024), np.uint8), b"labels": [0] * 20}, "N x 3072"),
        ({b"data": np.zeros((20, 3072), np.float32), b"labels": [0] * 20}, "uint8"),
        ({b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 19}, "20 class ids 0-9"),
        ({b"data": np.zeros((20, 3072), np.uint8), b"labels": [10] * 20}, "20 class ids 0-9"),
    ],
)
def test_not_a_cifar_batch(cifar_folder: Path, batch: Any, problem: str) -> None:
    (cifar_folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(UsageError, match=f"not a CIFAR-10 python batch.*{problem}"):
        _load(cifar_folder)
