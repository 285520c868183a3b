"""CIFAR-10 from its python-pickle batches (read directly: torchvision's reader insists on md5 sums)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lth_ray.lottery.datasets.base import (
    DATASETS,
    SHAPES,
    DataShape,
    RawData,
    cached,
    download_error,
    missing_error,
)
from lth_ray.specs import DatasetSpec

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
FILES = [*TRAIN_FILES, "test_batch", "batches.meta"]


def _batch_dir(root: Path) -> Path | None:
    """`root/cifar-10-batches-py/` (torchvision's layout), or `root` itself if it holds the batches."""
    for d in (root / FOLDER, root):
        if all((d / f).is_file() for f in FILES):
            return d
    return None


def _sources(spec: DatasetSpec) -> list[Path] | None:
    d = _batch_dir(Path(spec.root).expanduser())
    return None if d is None else [d / f for f in FILES]


def _unpickle(path: Path) -> dict[bytes, Any]:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(d[b"labels"], dtype=np.int64)


SHAPES.register("cifar10")(lambda spec: DataShape((3, 32, 32), 10, 50_000, 10_000))


@DATASETS.register("cifar10")
@cached(_sources)
def load_cifar10(spec: DatasetSpec) -> RawData:
    root = Path(spec.root).expanduser()
    d = _batch_dir(root)
    if d is None and spec.download:
        try:
            from torchvision.datasets import CIFAR10

            CIFAR10(str(root), train=True, download=True)
        except Exception as e:  # network errors come in many types
            raise download_error("CIFAR-10", root, e) from e
        d = _batch_dir(root)
    if d is None:
        have = [f for f in FILES if (root / FOLDER / f).is_file()]
        note = f" (found only {', '.join(have)})" if have else ""
        raise missing_error(
            "CIFAR-10",
            root,
            f"the python-pickle batches in '{root / FOLDER}/' ({', '.join(FILES)}){note}",
            download=True,
        )
    parts = [_read_batch(d / f) for f in TRAIN_FILES]
    test_x, test_y = _read_batch(d / "test_batch")
    names = [n.decode() for n in _unpickle(d / "batches.meta")[b"label_names"]]
    return RawData(
        train_x=torch.from_numpy(np.concatenate([p[0] for p in parts])),
        train_y=torch.from_numpy(np.concatenate([p[1] for p in parts])),
        test_x=torch.from_numpy(test_x),
        test_y=torch.from_numpy(test_y),
        classes=names,
    )
