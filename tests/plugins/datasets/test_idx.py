"""The ``idx`` dataset: MNIST-format folders, plain or gzipped, and what it refuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from prunetune.errors import UsageError
from prunetune.plugins.datasets.idx import DEFAULT_PATH, IdxDataset

REAL_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fashion-mnist"


def _load(path: Path | str, limit: int | None = None):
    return IdxDataset(IdxDataset.Config(path=str(path), limit=limit)).load(0, 0.25)


def test_default_path_is_debians_fashion_mnist() -> None:
    assert IdxDataset.Config().path == "/usr/share/datasets/fashion-mnist"


def test_missing_default_folder_says_how_to_get_it() -> None:
    if Path(DEFAULT_PATH).exists():
        pytest.skip("Debian's dataset-fashion-mnist is installed here")
    with pytest.raises(UsageError, match="does not exist.*dataset-fashion-mnist"):
        IdxDataset(IdxDataset.Config()).load(0, 0.1)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="IDX folder .*nowhere.* does not exist"):
        _load(tmp_path / "nowhere")


def test_missing_file_names_it_and_the_expected_files(idx_folder: Path) -> None:
    (idx_folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UsageError, match=r"no t10k-labels-idx1-ubyte\[\.gz\].*expected"):
        _load(idx_folder)


def test_gzip_data_without_the_suffix_is_read(idx_folder: Path) -> None:
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (idx_folder / f"{name}.gz").rename(idx_folder / name)
    assert len(_load(idx_folder).test_x) == 12


@pytest.mark.parametrize(
    ("name", "magic", "found"),
    [("t10k-images-idx3-ubyte", 2051, 2049), ("t10k-labels-idx1-ubyte", 2049, 2051)],
)
def test_bad_magic_number(
    idx_folder: Path, write_idx: Callable[..., Path], name: str, magic: int, found: int
) -> None:
    write_idx(idx_folder / name, found, np.zeros((12, 6, 5) if magic == 2049 else 12, np.uint8))
    with pytest.raises(UsageError, match=f"magic number {found}, expected {magic}"):
        _load(idx_folder)


def test_truncated_images(idx_folder: Path) -> None:
    path = idx_folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(UsageError, match="truncated: its header announces 12 images"):
        _load(idx_folder)


def test_short_header(idx_folder: Path) -> None:
    (idx_folder / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(UsageError, match="too short to be an IDX labels file"):
        _load(idx_folder)


def test_corrupt_gzip(idx_folder: Path) -> None:
    path = idx_folder / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[:10] + bytes(b ^ 0xFF for b in data[10:40]) + data[40:])
    with pytest.raises(UsageError, match="cannot read IDX file"):
        _load(idx_folder)


def test_image_and_label_counts_must_agree(
    idx_folder: Path, write_idx: Callable[..., Path]
) -> None:
    write_idx(idx_folder / "t10k-labels-idx1-ubyte", 2049, np.zeros(11, np.uint8))
    with pytest.raises(UsageError, match="holds 12 images but .* holds 11 labels"):
        _load(idx_folder)


def test_train_and_test_sizes_must_agree(
    idx_folder: Path, write_idx: Callable[..., Path]
) -> None:
    write_idx(idx_folder / "t10k-images-idx3-ubyte", 2051, np.zeros((12, 5, 5), np.uint8))
    with pytest.raises(UsageError, match="training images are 6x5 but test images are 5x5"):
        _load(idx_folder)


def test_limit_reads_only_the_first_images(idx_folder: Path) -> None:
    # The tail past the limit is garbage; a capped read must never reach it.
    path = idx_folder / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[: 16 + 5 * 30])
    assert len(_load(idx_folder, limit=5).test_x) == 5


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="no shared Fashion-MNIST copy")
def test_real_fashion_mnist_first_images() -> None:
    splits = _load(REAL_DATA, limit=200)
    assert splits.input_shape == (1, 28, 28)
    assert splits.num_classes == 10
    assert len(splits.test_x) == 200
