"""MNIST and Fashion-MNIST from their idx files (plain or .gz), e.g. Debian's dataset-fashion-mnist."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from lth_ray.lottery.datasets.base import (
    DATASETS,
    SHAPES,
    DatasetError,
    DataShape,
    RawData,
    cached,
    missing_error,
    torchvision_download,
)
from lth_ray.specs import DatasetSpec

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"]  # fmt: skip


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file: 2 zero bytes, a type code (0x08 = ubyte), the rank, big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        buf = f.read()
    if len(buf) < 4 or buf[0:2] != b"\0\0" or buf[2] != 0x08:
        raise DatasetError(f"'{path}' is not an unsigned-byte idx file (bad magic {buf[:4]!r})")
    rank = buf[3]
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">i4", count=rank, offset=4))
    data = np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"'{path}' is truncated: header says {dims}, found {data.size} values")
    return data.reshape(dims)


def _find(folder: Path, name: str) -> Path | None:
    for p in (folder / name, folder / f"{name}.gz"):
        if p.is_file():
            return p
    return None


def _locate(root: Path, tv_name: str) -> dict[str, Path] | None:
    """The four files in `root` itself or in torchvision's `root/<Name>/raw/`."""
    for folder in (root, root / tv_name / "raw"):
        found = {k: _find(folder, n) for k, n in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def _make(tv_name: str, title: str, classes: list[str]):
    def sources(spec: DatasetSpec) -> list[Path] | None:
        found = _locate(Path(spec.root).expanduser(), tv_name)
        return None if found is None else list(found.values())

    @cached(sources)
    def load(spec: DatasetSpec) -> RawData:
        root = Path(spec.root).expanduser()
        found = _locate(root, tv_name)
        if found is None and spec.download:
            torchvision_download(title, root, tv_name)
            found = _locate(root, tv_name)
        if found is None:
            names = ", ".join(f"{n}[.gz]" for n in FILES.values())
            raise missing_error(
                title,
                root,
                f"the idx files {names} in '{root}/' or '{root / tv_name / 'raw'}/'",
                download=True,
            )
        a = {k: read_idx(p) for k, p in found.items()}
        for split in ("train", "test"):
            x, y = a[f"{split}_x"], a[f"{split}_y"]
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DatasetError(
                    f"{title} {split} files disagree: images {x.shape}, labels {y.shape}"
                )
        return RawData(
            train_x=torch.from_numpy(a["train_x"].copy()).unsqueeze(1),
            train_y=torch.from_numpy(a["train_y"].astype(np.int64)),
            test_x=torch.from_numpy(a["test_x"].copy()).unsqueeze(1),
            test_y=torch.from_numpy(a["test_y"].astype(np.int64)),
            classes=list(classes),
        )

    return load


SHAPES.register("fashion_mnist")(lambda spec: DataShape((1, 28, 28), 10, 60_000, 10_000))
SHAPES.register("mnist")(lambda spec: DataShape((1, 28, 28), 10, 60_000, 10_000))
DATASETS.register("fashion_mnist")(_make("FashionMNIST", "Fashion-MNIST", FASHION_CLASSES))
DATASETS.register("mnist")(_make("MNIST", "MNIST", DIGIT_CLASSES))
