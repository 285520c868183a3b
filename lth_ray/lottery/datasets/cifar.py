"""CIFAR-10 from its python-pickle batches.

A pickle can run any code it names, so the batches are checked against torchvision's md5 list
before they are read (`dataset.verify_checksums`, on by default), and read with an unpickler that
builds only what a CIFAR batch holds (dicts, lists, bytes, numpy arrays) in either case.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

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


# What a CIFAR-10 batch pickles: numpy arrays (module moved in numpy 2) and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR-10 batch names {module}.{name}; refused")
        return super().find_class(module, name)


def expected_md5() -> dict[str, str]:
    """torchvision's md5 of each file of the python version of CIFAR-10."""
    from torchvision.datasets.cifar import CIFAR10

    sums = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    sums[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    return sums


def _verify(d: Path) -> None:
    sums = expected_md5()
    for name in FILES:
        got = hashlib.md5((d / name).read_bytes(), usedforsecurity=False).hexdigest()
        if got != sums[name]:
            raise DatasetError(
                f"CIFAR-10 file '{d / name}' has md5 {got}, not the published {sums[name]}: it is"
                " not the official batch, and batches are pickles, which can run code when read."
                " Replace it with the official file, or, for batches you made yourself, set"
                " dataset.verify_checksums: false (read with a restricted unpickler either way)"
            )


def _unpickle(path: Path) -> dict[bytes, Any]:
    try:
        return _BatchUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DatasetError(f"CIFAR-10 file '{path}' is not a readable batch: {e}") from None


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
        torchvision_download("CIFAR-10", root, "CIFAR10")
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
    if spec.verify_checksums:
        _verify(d)
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
