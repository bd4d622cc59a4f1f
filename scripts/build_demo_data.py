"""Build the bundled demo data: a balanced, seeded subset of Fashion-MNIST as Parquet.

Writes ``plugins/datasets/data/fashion_mnist_demo.parquet`` (read by the
``fashion_mnist_demo`` dataset): 600 images per class from the training set (6,000) and 100
per class from the test set (1,000), zstd-compressed. Columns:

- ``image``: binary, the 784 bytes of one 28x28 uint8 image, row-major;
- ``label``: int8 class id 0-9;
- ``split``: ``"train"`` or ``"test"``.

Rows are shuffled within each split, so the first rows of a split cover every class.
Fashion-MNIST is Copyright 2017 Zalando SE, MIT licence; the notice travels in the file's
metadata.

Usage: ``python scripts/build_demo_data.py [--source IDX_FOLDER] [--output FILE]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prunetune.errors import UsageError
from prunetune.plugins.datasets.idx import read_split

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (
    ROOT.parent / "shared" / "data" / "fashion-mnist",
    Path("/usr/share/datasets/fashion-mnist"),  # Debian's dataset-fashion-mnist
)
OUTPUT = ROOT / "plugins" / "datasets" / "data" / "fashion_mnist_demo.parquet"
SEED = 2017
PER_CLASS = {"train": 600, "test": 100}
NUM_CLASSES = 10
MAX_BYTES = 5 * 1024 * 1024
METADATA = {
    "source": "Fashion-MNIST (github.com/zalandoresearch/fashion-mnist), balanced subset",
    "license": "MIT (Expat), Copyright 2017 Zalando SE",
    "seed": str(SEED),
    "per_class": "train=600,test=100",
}


def balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` random items of every class, shuffled together."""
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in range(NUM_CLASSES)
    ]
    return rng.permutation(np.concatenate(chosen))


def build(source: Path, output: Path) -> int:
    """Write the subset of the IDX folder ``source`` to ``output``; return its size in bytes."""
    rng = np.random.default_rng(SEED)
    images, labels, splits = [], [], []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = read_split(source, prefix)
        keep = balanced(y, PER_CLASS[split], rng)
        images.extend(img.tobytes() for img in x[keep, 0])
        labels.append(y[keep])
        splits.extend([split] * len(keep))
    table = pa.table(
        {
            "image": pa.array(images, type=pa.binary()),
            "label": pa.array(np.concatenate(labels).astype(np.int8), type=pa.int8()),
            "split": pa.array(splits, type=pa.string()),
        }
    ).replace_schema_metadata({f"prunetune.{k}": v for k, v in METADATA.items()})
    output.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table, output, compression="zstd", compression_level=19, use_dictionary=["split"]
    )
    return output.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        help=f"Fashion-MNIST IDX folder (default: the first of {', '.join(map(str, SOURCES))} "
        "that exists)",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)
    source = args.source or next((s for s in SOURCES if s.is_dir()), None)
    if source is None:
        tried = ", ".join(map(str, SOURCES))
        print(f"error: no Fashion-MNIST folder (tried {tried}); pass --source", file=sys.stderr)
        return 2
    try:
        size = build(source, args.output)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({size:,} bytes, {size / 1024 / 1024:.2f} MiB) from {source}")
    if size > MAX_BYTES:
        print(f"error: {args.output} is over the {MAX_BYTES:,}-byte limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
