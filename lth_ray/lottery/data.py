"""Datasets as tensors: registry lookup, an on-disk cache of decoded images, the split and scaling.

Decoding happens once per source (cached as uint8 tensors); after `load_dataset` the training loop only
indexes tensors, which can live on the GPU (`DataSplits.to`). The train/val split depends on
`dataset.split_seed` alone, so every model seed of an ablation sees the same validation set.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from lth_ray.lottery.datasets import DATASETS, DatasetError, RawData, cached
from lth_ray.lottery.datasets.image_folder import is_archive
from lth_ray.specs import DatasetSpec

__all__ = [
    "DATASETS",
    "DataSplits",
    "DatasetError",
    "RawData",
    "cache_path",
    "cached",
    "load_dataset",
    "load_raw",
    "split_indices",
]

CACHE_VERSION = 1  # bump when the decoded layout changes

# open_lth's CIFAR-10 normalisation: ImageNet's channel statistics, not CIFAR-10's own (which are
# about mean [0.491, 0.482, 0.447], std [0.247, 0.243, 0.262]; `standardize` computes them)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataSplits:
    """Train / validation / test tensors ready for training: x float32 [N, C, H, W], y int64 [N]."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    black: torch.Tensor | None = None  # [C]: a zero pixel after scaling (augmentation's padding)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def to(self, device: torch.device | str) -> DataSplits:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.to(device)
        return DataSplits(**moved)


def split_indices(n: int, val_size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, val_idx): a random permutation of range(n) seeded by `split_seed` only, cut at val_size."""
    if not 0 <= val_size < n:
        raise ValueError(
            f"dataset.val_size must be in [0, {n}) for {n} training examples, got {val_size}"
        )
    g = torch.Generator().manual_seed(split_seed)
    perm = torch.randperm(n, generator=g)
    return perm[val_size:], perm[:val_size]


# ----------------------------------------------------------------------------------------------
# The cache of decoded tensors.


def _cache_dir(spec: DatasetSpec) -> Path:
    if spec.cache_dir:
        return Path(spec.cache_dir).expanduser()
    root = Path(spec.root).expanduser()
    return Path(f"{root}.lth_cache") if is_archive(root) else root / ".lth_cache"


def cache_path(spec: DatasetSpec, sources: list[Path]) -> Path:
    """Where the decoded tensors of these sources live: keyed by name + each file's path, size, mtime."""
    h = hashlib.sha256(f"{CACHE_VERSION}|{spec.name}".encode())
    for p in sources:
        st = p.stat()
        h.update(f"|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return _cache_dir(spec) / f"{spec.name}-{h.hexdigest()[:16]}.pt"


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive lock so trials starting together on one node decode once; no-op where impossible."""
    try:
        import fcntl

        fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_cache(path: Path) -> RawData | None:
    try:
        d = torch.load(path, weights_only=True)
        return RawData(**{f.name: d[f.name] for f in fields(RawData)})
    except Exception:  # absent, truncated or foreign: decode again (and overwrite)
        return None


def _write_cache(path: Path, raw: RawData) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({f.name: getattr(raw, f.name) for f in fields(raw)}, tmp)
        os.replace(tmp, path)
    except OSError:  # read-only or full disk: caching is an optimisation, never a failure
        with contextlib.suppress(OSError):
            tmp.unlink()


def load_raw(spec: DatasetSpec) -> RawData:
    """The decoded dataset, from the on-disk cache when its sources are unchanged."""
    loader = DATASETS.get(spec.name)
    sources_of = getattr(loader, "sources", None)
    sources = sources_of(spec) if sources_of else None
    if sources is None:  # not cacheable, or missing: the loader downloads or explains
        raw = loader(spec)
        sources = sources_of(spec) if sources_of else None
        if sources is not None:
            path = cache_path(spec, sources)
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_cache(path, raw)
        return raw
    path = cache_path(spec, sources)
    writable = True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        writable = False
    if not writable:
        return _read_cache(path) or loader(spec)
    with _lock(path):
        raw = _read_cache(path)
        if raw is None:
            raw = loader(spec)
            _write_cache(path, raw)
    return raw


# ----------------------------------------------------------------------------------------------
# Split, limits, scaling.


def _scale(x: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    x = x.to(torch.float32).div_(255.0)
    if mean is not None and std is not None:
        x.sub_(mean).div_(std)
    return x


def load_dataset(spec: DatasetSpec) -> DataSplits:
    """Decoded data -> deterministic train/val split -> optional limits -> float32 scaling.

    `train_limit` keeps the first N of the (shuffled) training split. `test_limit` keeps N test
    examples drawn with the split seed, since stored test sets are often sorted by class.
    `standardize` uses per-channel mean/std of the training split actually used; `imagenet` the
    fixed ImageNet statistics open_lth applies to CIFAR-10.
    """
    raw = load_raw(spec)
    n = len(raw.train_y)
    if spec.val_size >= n:
        raise ValueError(
            f"dataset.val_size = {spec.val_size} leaves no training data: "
            f"'{spec.name}' has only {n} training examples"
        )
    train_idx, val_idx = split_indices(n, spec.val_size, spec.split_seed)
    if spec.train_limit is not None:
        train_idx = train_idx[: spec.train_limit]
    test_idx = torch.arange(len(raw.test_y))
    if spec.test_limit is not None and spec.test_limit < len(test_idx):
        g = torch.Generator().manual_seed(spec.split_seed)
        test_idx = torch.randperm(len(test_idx), generator=g)[: spec.test_limit]

    mean = std = None
    train_x = _scale(raw.train_x[train_idx], None, None)
    if spec.scale == "standardize":
        mean = train_x.mean(dim=(0, 2, 3), keepdim=True)[0]
        std = train_x.std(dim=(0, 2, 3), keepdim=True)[0].clamp_min(1e-8)
        train_x.sub_(mean).div_(std)
    elif spec.scale == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN).view(-1, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(-1, 1, 1)
        if train_x.shape[1] != len(IMAGENET_MEAN):
            raise ValueError(
                f"dataset.scale 'imagenet' needs RGB images, got {train_x.shape[1]} channels"
            )
        train_x.sub_(mean).div_(std)
    elif spec.scale != "unit":
        raise ValueError(
            f"dataset.scale must be 'unit', 'standardize' or 'imagenet', got {spec.scale!r}"
        )
    return DataSplits(
        train_x=train_x,
        train_y=raw.train_y[train_idx],
        val_x=_scale(raw.train_x[val_idx], mean, std),
        val_y=raw.train_y[val_idx],
        test_x=_scale(raw.test_x[test_idx], mean, std),
        test_y=raw.test_y[test_idx],
        classes=list(raw.classes),
        black=(
            torch.zeros(train_x.shape[1])
            if mean is None or std is None
            else (-mean / std).flatten()
        ),
    )
