"""The ``parquet`` dataset: image layouts it understands and the mistakes it reports."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from prunetune.components.data import DataSplits
from prunetune.errors import UsageError
from prunetune.host.options import build_config
from prunetune.plugins.datasets.parquet import ParquetDataset

RNG = np.random.default_rng(0)


def _write(path: Path, images: Any, labels: Any = None, image_type: Any = None) -> Path:
    n = len(images)
    labels = list(range(n)) if labels is None else labels
    pq.write_table(pa.table({"image": pa.array(images, type=image_type), "label": labels}), path)
    return path


def _load(train: Path, test: Path | None = None, **options: str) -> DataSplits:
    values = {"train": str(train), "test": str(test or train), **options}
    config = build_config(ParquetDataset.Config, values, "dataset 'parquet'")
    return ParquetDataset(config).load(0, 0.0)


def _assert_test_images(splits: DataSplits, expected: np.ndarray) -> None:
    """Test images are the raw ones normalised by the training statistics (train == test)."""
    raw = torch.from_numpy(expected).double()
    mean = raw.mean(dim=(0, 2, 3))[:, None, None]
    std = raw.std(dim=(0, 2, 3), correction=0)[:, None, None]
    torch.testing.assert_close(splits.test_x.double(), (raw - mean) / std, atol=1e-4, rtol=0)


def _pixels(*shape: int, n: int = 6) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def test_nested_lists_are_h_by_w(tmp_path: Path) -> None:
    x = _pixels(4, 3)
    splits = _load(_write(tmp_path / "a.parquet", x.tolist()))
    _assert_test_images(splits, x[:, None])


def test_fixed_size_lists_are_read(tmp_path: Path) -> None:
    x = _pixels(12)
    path = _write(tmp_path / "a.parquet", x.tolist(), image_type=pa.list_(pa.uint8(), 12))
    _assert_test_images(_load(path, shape="3,2,2"), x.reshape(6, 3, 2, 2))


def test_nested_c_h_w_is_kept(tmp_path: Path) -> None:
    x = _pixels(3, 5, 4)
    _assert_test_images(_load(_write(tmp_path / "a.parquet", x.tolist())), x)


def test_nested_h_w_c_is_transposed(tmp_path: Path) -> None:
    x = _pixels(5, 4, 3)
    splits = _load(_write(tmp_path / "a.parquet", x.tolist()))
    _assert_test_images(splits, x.transpose(0, 3, 1, 2))


def test_flat_square_binary_is_one_grey_channel(tmp_path: Path) -> None:
    x = _pixels(4, 4)
    splits = _load(_write(tmp_path / "a.parquet", [img.tobytes() for img in x]))
    _assert_test_images(splits, x[:, None])


def test_flat_non_square_needs_shape(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.parquet", [img.tobytes() for img in _pixels(3, 2, 2)])
    with pytest.raises(UsageError, match="flat images of 12 values; set shape=C,H,W"):
        _load(path)
    assert _load(path, shape="3,2,2").input_shape == (3, 2, 2)


def test_shape_that_does_not_fit(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.parquet", [img.tobytes() for img in _pixels(4, 4)])
    with pytest.raises(UsageError, match="shape=1,3,3 needs 9 values per image but .* has 16"):
        _load(path, shape="1,3,3")


@pytest.mark.parametrize("shape", ["0,4", "1,2,3,4", "4"])
def test_invalid_shape_option(shape: str) -> None:
    with pytest.raises(UsageError, match="shape=.* is not valid"):
        build_config(ParquetDataset.Config, {"shape": shape}, "dataset 'parquet'")


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_png_grey_and_rgb_and_hugging_face_structs(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    grey, rgb = _pixels(5, 4), _pixels(5, 4, 3)
    path = _write(tmp_path / "grey.parquet", [_png(img) for img in grey])
    _assert_test_images(_load(path), grey[:, None])
    structs = [{"bytes": _png(img), "path": None} for img in rgb]
    splits = _load(_write(tmp_path / "rgb.parquet", structs))
    _assert_test_images(splits, rgb.transpose(0, 3, 1, 2))


def test_png_of_mixed_sizes(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    blobs = [_png(_pixels(5, 4, n=1)[0]), _png(_pixels(4, 4, n=1)[0])]
    with pytest.raises(UsageError, match="images differ in shape.*5x4x1 in row 0, 4x4x1 in row 1"):
        _load(_write(tmp_path / "a.parquet", blobs))


def test_unreadable_png(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    blobs = [_png(_pixels(5, 4, n=1)[0]), b"\x89PNG\r\n\x1a\n" + b"garbage"]
    with pytest.raises(UsageError, match="row 1: unreadable image"):
        _load(_write(tmp_path / "a.parquet", blobs))


def test_png_without_pillow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "a.parquet", [b"\x89PNG\r\n\x1a\n" + b"\x00" * 8])
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(UsageError, match="needs Pillow \\(pip install pillow\\)"):
        _load(path)


def test_binary_of_mixed_sizes(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.parquet", [b"\x01" * 16, b"\x02" * 9])
    with pytest.raises(UsageError, match="images differ in size \\(9 and 16 bytes\\)"):
        _load(path)


def test_lists_of_mixed_shapes(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.parquet", [[[1, 2], [3, 4]], [[1, 2, 3], [4, 5, 6]]])
    with pytest.raises(UsageError, match="images differ in shape"):
        _load(path)


def test_train_and_test_shapes_must_agree(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.parquet", _pixels(4, 4).tolist())
    test = _write(tmp_path / "test.parquet", _pixels(3, 3).tolist())
    with pytest.raises(UsageError, match="training images are 1x4x4 but test images are 1x3x3"):
        _load(train, test)


def test_pixel_values_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="pixel values 0..300; expected 0-255"):
        _load(_write(tmp_path / "a.parquet", [[[0, 300], [1, 2]]] * 2))


def test_float_pixels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="pixels of type double; expected integers 0-255"):
        _load(_write(tmp_path / "a.parquet", [[[0.5, 0.1], [0.2, 0.3]]] * 2))


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.parquet", _pixels(2, 2).tolist())
    with pytest.raises(UsageError, match="no column 'target' \\(columns: image, label\\)"):
        _load(path, label_column="target")


def test_labels_must_be_integers(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.parquet", _pixels(2, 2).tolist(), labels=["a"] * 6)
    with pytest.raises(UsageError, match="type string; expected integer class ids"):
        _load(path)


def test_negative_labels(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.parquet", _pixels(2, 2).tolist(), labels=[0, 1, -1, 0, 1, 0])
    with pytest.raises(UsageError, match="negative label -1"):
        _load(path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="train path .*nowhere.* does not exist"):
        _load(tmp_path / "nowhere")


def test_paths_are_required() -> None:
    with pytest.raises(UsageError, match="needs train=PATH"):
        ParquetDataset(ParquetDataset.Config()).load(0, 0.1)


def test_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    path.write_text("image,label\n")
    with pytest.raises(UsageError, match="cannot read train .* as Parquet"):
        _load(path)


def test_folder_of_files(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    _write(folder / "part-0.parquet", _pixels(2, 2).tolist())
    _write(folder / "part-1.parquet", _pixels(2, 2).tolist())
    (folder / "README.md").write_text("not data")
    assert len(_load(folder).test_x) == 12


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(UsageError, match="has no Parquet files"):
        _load(tmp_path / "train")
