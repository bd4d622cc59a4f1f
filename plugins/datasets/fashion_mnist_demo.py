"""The ``fashion_mnist_demo`` dataset: a small Fashion-MNIST subset shipped inside prunetune.

The bundled ``data/fashion_mnist_demo.parquet`` holds 6,000 training and 1,000 test images,
balanced over the 10 classes (built by ``scripts/build_demo_data.py``; columns ``image``
(784 raw bytes of a 28x28 image), ``label`` and ``split``). Fashion-MNIST is Copyright 2017
Zalando SE, MIT licence.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from typing import TYPE_CHECKING

import numpy as np

from prunetune import hookimpl
from prunetune.components.data import DatasetSource, DataSplits
from prunetune.errors import UsageError
from prunetune.plugins.datasets._common import check_limit, make_splits

if TYPE_CHECKING:
    import pyarrow as pa

    from prunetune.host.registry import Registry

__all__ = ["FashionMnistDemo", "read_bundled"]

FILENAME = "fashion_mnist_demo.parquet"
NUM_CLASSES = 10
SIDE = 28


def read_bundled() -> pa.Table:
    """The bundled Parquet table (columns ``image``, ``label``, ``split``).

    Raises:
        UsageError: The file is missing from this installation.
    """
    import pyarrow.parquet as pq

    resource = importlib.resources.files(__package__).joinpath("data", FILENAME)
    if not resource.is_file():
        raise UsageError(
            f"the bundled demo data {FILENAME} is missing from this installation "
            "(reinstall prunetune, or run scripts/build_demo_data.py in a checkout)"
        )
    with importlib.resources.as_file(resource) as path:
        return pq.read_table(path, columns=["image", "label", "split"])


def _split(table: pa.Table, name: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.compute as pc

    rows = table.filter(pc.equal(table["split"], name))
    if limit is not None:
        rows = rows.slice(0, limit)
    pixels = b"".join(rows["image"].to_pylist())
    images = np.frombuffer(pixels, dtype=np.uint8).reshape(-1, 1, SIDE, SIDE)
    return images, rows["label"].to_numpy().astype(np.int64)


class FashionMnistDemo(DatasetSource):
    """Bundled Fashion-MNIST subset (6,000 train / 1,000 test), offline, no setup."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``fashion_mnist_demo`` dataset.

        Attributes:
            limit: Use at most this many images of each split (the first ones; every class
                appears early because the rows are shuffled).
        """

        limit: int | None = None

        def __post_init__(self) -> None:
            check_limit(self.limit)

    def __init__(self, config: FashionMnistDemo.Config) -> None:
        self.config = config

    def load(self, seed: int, val_fraction: float) -> DataSplits:
        """Read the bundled subset and hold out ``val_fraction`` of its training images."""
        table = read_bundled()
        train_x, train_y = _split(table, "train", self.config.limit)
        test_x, test_y = _split(table, "test", self.config.limit)
        return make_splits(
            train_x,
            train_y,
            test_x,
            test_y,
            seed=seed,
            val_fraction=val_fraction,
            num_classes=NUM_CLASSES,
        )


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    """Offer the ``fashion_mnist_demo`` dataset."""
    registry.add_dataset("fashion_mnist_demo", FashionMnistDemo)
