"""The ``parquet`` dataset: your own images and labels in Parquet files.

The image column may hold, per row:

- raw uint8 pixels: ``binary`` (row-major bytes) or a list / fixed-size list of integers
  0-255, flat or nested ``H x W``, ``C x H x W`` or ``H x W x C``;
- encoded PNG or JPEG bytes (decoded with Pillow), also as the ``bytes`` field of a struct,
  the way Hugging Face ``datasets`` stores its ``Image`` feature.

Shapes: an encoded image is ``H x W`` (grey) or ``H x W x C``. Raw pixels take their shape
from the list nesting, or from ``shape=`` when given (needed for flat non-square data such as
``shape=3,32,32``); flat data with a square number of values is read as one grey ``H x W``
channel. A 3-D shape is read as ``C,H,W`` unless its last size is 1, 3 or 4 and its first is
not, then as ``H,W,C``. Every image of both splits must share one shape.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prunetune import hookimpl
from prunetune.components.data import DatasetSource, DataSplits
from prunetune.errors import UsageError
from prunetune.plugins.datasets._common import check_limit, make_splits

if TYPE_CHECKING:
    import pyarrow as pa

    from prunetune.host.registry import Registry

__all__ = ["ParquetDataset"]

_ENCODED = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG signatures
_CHANNELS = (1, 3, 4)
# Pillow modes turned into 8-bit grey, RGB or RGBA; anything else (16-bit, float) is refused.
_MODES = {
    **{mode: mode for mode in ("L", "RGB", "RGBA")},
    **{mode: "L" for mode in ("1", "LA")},
    **{mode: "RGB" for mode in ("P", "CMYK", "YCbCr", "LAB", "HSV")},
    "PA": "RGBA",
}


def _read_table(path: str, option: str, columns: list[str], limit: int | None) -> pa.Table:
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not path:
        raise UsageError(f"parquet dataset needs {option}=PATH (a Parquet file or folder)")
    location = Path(os.path.expanduser(path))
    if not location.exists():
        raise UsageError(f"{option} path {str(location)!r} does not exist "
                         "(expected a Parquet file or a folder of Parquet files)")
    try:
        dataset = ds.dataset(location, format="parquet", exclude_invalid_files=location.is_dir())
        if not dataset.files:
            raise UsageError(f"{option} folder {str(location)!r} has no Parquet files")
        names = dataset.schema.names
        for column, key in zip(columns, ("image_column", "label_column")):
            if column not in names:
                raise UsageError(
                    f"{option} data {str(location)!r} has no column {column!r} "
                    f"(columns: {', '.join(names)}); set {key}= to one of them"
                )
        if limit is None:
            return dataset.to_table(columns=columns)
        return dataset.head(limit, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read {option} {str(location)!r} as Parquet: {reason}") from None


def _decode_encoded(blobs: list[bytes], where: str) -> np.ndarray:
    """PNG / JPEG bytes to uint8 ``[N, C, H, W]``."""
    try:
        from PIL import Image
    except ImportError:
        raise UsageError(
            f"{where} holds PNG/JPEG images; decoding them needs Pillow (pip install pillow)"
        ) from None
    images: list[np.ndarray] = []
    for row, blob in enumerate(blobs):
        try:
            with Image.open(io.BytesIO(blob)) as img:
                if img.mode not in _MODES:
                    raise UsageError(f"{where} row {row}: image mode {img.mode} is not 8-bit "
                                     "(expected grey, RGB or RGBA)")
                pixels = np.asarray(img.convert(_MODES[img.mode]))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UsageError(f"{where} row {row}: unreadable image ({exc})") from None
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        if images and pixels.shape != images[0].shape:
            raise UsageError(
                f"{where}: images differ in shape (HxWxC {_dims(images[0].shape)} in row 0, "
                f"{_dims(pixels.shape)} in row {row}); all must share one shape"
            )
        images.append(pixels)
    return np.stack(images).transpose(0, 3, 1, 2)


def _raw_pixels(arr: pa.Array, where: str) -> np.ndarray:
    """Lists of integers 0-255 to uint8 ``[N, *nesting]``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n, dims = len(arr), []
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or (
        pa.types.is_fixed_size_list(arr.type)
    ):
        if arr.null_count:
            raise UsageError(f"{where} has missing values inside images")
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if len(np.unique(lengths)) > 1:
            raise UsageError(
                f"{where}: images differ in shape (lists of {lengths.min()} and "
                f"{lengths.max()} items); all must share one shape"
            )
        dims.append(int(lengths[0]))
        arr = arr.flatten()
    if arr.null_count:
        raise UsageError(f"{where} has missing pixel values")
    if not pa.types.is_integer(arr.type):
        raise UsageError(f"{where} holds pixels of type {arr.type}; expected integers 0-255")
    values = arr.to_numpy(zero_copy_only=False)
    if len(values) and (values.min() < 0 or values.max() > 255):
        raise UsageError(
            f"{where} has pixel values {values.min()}..{values.max()}; expected 0-255"
        )
    return values.astype(np.uint8).reshape(n, *dims)


def _to_chw(x: np.ndarray, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    """Reshape ``[N, ...]`` raw pixels to ``[N, C, H, W]`` following the module's rules."""
    per_image = math.prod(x.shape[1:])
    dims = tuple(x.shape[1:])
    if shape is not None:
        if math.prod(shape) != per_image:
            raise UsageError(f"shape={','.join(map(str, shape))} needs {math.prod(shape)} "
                             f"values per image but {where} has {per_image}")
        dims = shape
    elif len(dims) == 1:
        side = math.isqrt(per_image)
        if side == 0 or side * side != per_image:
            raise UsageError(f"{where} holds flat images of {per_image} values; set "
                             "shape=C,H,W (e.g. shape=3,32,32)")
        dims = (side, side)
    if len(dims) not in (2, 3):
        raise UsageError(f"{where} images have {len(dims)} dimensions "
                         "(expected H,W or C,H,W or H,W,C; set shape=)")
    x = x.reshape(len(x), *dims)
    if len(dims) == 2:
        return x[:, None]
    if dims[-1] in _CHANNELS and dims[0] not in _CHANNELS:
        return x.transpose(0, 3, 1, 2)
    return x


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _images(column: pa.ChunkedArray, where: str, shape: tuple[int, ...] | None) -> np.ndarray:
    import pyarrow as pa

    arr = column.combine_chunks()
    if pa.types.is_struct(arr.type) and arr.type.get_field_index("bytes") >= 0:
        if arr.null_count:
            raise UsageError(f"{where} has {arr.null_count} missing images")
        arr = arr.field("bytes")
    if arr.null_count:
        raise UsageError(f"{where} has {arr.null_count} missing images")
    t = arr.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        blobs = arr.to_pylist()
        sizes = {len(b) for b in blobs}
        raw_size = shape is not None and sizes == {math.prod(shape)}
        if blobs and blobs[0].startswith(_ENCODED) and not raw_size:
            x = _decode_encoded(blobs, where)
            if shape is not None and x.shape[1:] != tuple(shape):
                raise UsageError(f"{where} holds {_dims(x.shape[1:])} (CxHxW) images but "
                                 f"shape={','.join(map(str, shape))}")
            return x
        if len(sizes) > 1:
            raise UsageError(f"{where}: images differ in size ({min(sizes)} and {max(sizes)} "
                             "bytes); all must share one shape")
        x = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), -1)
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        x = _raw_pixels(arr, where)
    else:
        raise UsageError(f"{where} has type {t}; expected raw uint8 pixels (binary or a list "
                         "of integers) or PNG/JPEG bytes")
    return _to_chw(x, shape, where)


def _labels(column: pa.ChunkedArray, where: str) -> np.ndarray:
    import pyarrow as pa

    if column.null_count:
        raise UsageError(f"{where} has {column.null_count} missing labels")
    if not pa.types.is_integer(column.type):
        raise UsageError(f"{where} has type {column.type}; expected integer class ids 0..K-1")
    y = column.to_numpy().astype(np.int64)
    if len(y) and y.min() < 0:
        raise UsageError(f"{where} has negative label {y.min()}; expected class ids 0..K-1")
    return y


def _check_classes(y: np.ndarray, where: str) -> None:
    """Refuse labels that are not class ids 0..K-1: the model gets ``max + 1`` outputs, so a
    stray 100000 would silently make a 100,001-class model."""
    if not len(y):
        return
    classes, distinct = int(y.max()) + 1, len(np.unique(y))
    if classes > 2 * distinct:
        raise UsageError(f"{where} holds {distinct} distinct labels up to {classes - 1}; "
                         f"expected class ids 0..K-1 (relabel them 0..{distinct - 1})")


class ParquetDataset(DatasetSource):
    """Your images and labels from Parquet files (raw uint8 pixels or PNG/JPEG bytes)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``parquet`` dataset.

        Attributes:
            train: Parquet file or folder of Parquet files with the training images.
            test: The same for the test images.
            image_column: Column with the images (see the module docstring for layouts).
            label_column: Column with integer class ids ``0..K-1``.
            shape: Shape of one image, ``C,H,W`` or ``H,W`` (or ``H,W,C``), for raw pixels
                stored flat; ``none`` to infer it.
            limit: Read at most this many images of each split (the first ones).
        """

        train: str = ""
        test: str = ""
        image_column: str = "image"
        label_column: str = "label"
        shape: tuple[int, ...] | None = None
        limit: int | None = None

        def __post_init__(self) -> None:
            check_limit(self.limit)
            if self.shape is not None:
                raw = self.shape.split(",") if isinstance(self.shape, str) else self.shape
                shape = tuple(int(s) if isinstance(s, str) and s.strip().isdigit() else s
                              for s in raw)
                if len(shape) not in (2, 3) or not all(
                    isinstance(s, int) and s > 0 for s in shape
                ):
                    raise ValueError(f"shape={self.shape!r} is not valid (expected C,H,W or "
                                     "H,W of positive sizes, e.g. 1,28,28)")
                object.__setattr__(self, "shape", shape)

    def __init__(self, config: ParquetDataset.Config) -> None:
        self.config = config

    def _read(self, option: str, path: str) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        table = _read_table(path, option, [cfg.image_column, cfg.label_column], cfg.limit)
        where = f"{option} column {{!r}} of {path!r}"
        x = _images(table[cfg.image_column], where.format(cfg.image_column), cfg.shape)
        y = _labels(table[cfg.label_column], where.format(cfg.label_column))
        return x, y

    def load(self, seed: int, val_fraction: float) -> DataSplits:
        """Read both splits and hold out ``val_fraction`` of the training images.

        Raises:
            UsageError: A path or column is missing, or the images are unreadable or differ
                in shape.
        """
        train_x, train_y = self._read("train", self.config.train)
        test_x, test_y = self._read("test", self.config.test)
        if train_x.shape[1:] != test_x.shape[1:]:
            raise UsageError(
                f"training images are {_dims(train_x.shape[1:])} but test images are "
                f"{_dims(test_x.shape[1:])} (CxHxW); both splits must share one shape"
            )
        _check_classes(np.concatenate([train_y, test_y]), f"the label column {self.config.label_column!r}")
        return make_splits(train_x, train_y, test_x, test_y, seed=seed, val_fraction=val_fraction)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    """Offer the ``parquet`` dataset."""
    registry.add_dataset("parquet", ParquetDataset)
