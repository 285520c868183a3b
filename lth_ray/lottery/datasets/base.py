"""What every dataset reader shares: the registry, the decoded-data record and the error type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lth_ray.registry import Registry
from lth_ray.specs import DatasetSpec


@dataclass
class RawData:
    """A decoded, unsplit dataset as uint8 images [N, C, H, W] and int64 labels; what gets cached."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]


class DatasetError(FileNotFoundError):
    """Dataset files missing or unreadable; the message says what was expected and how to fix it."""


Loader = Callable[[DatasetSpec], RawData]
Sources = Callable[[DatasetSpec], "list[Path] | None"]

DATASETS: Registry[Loader] = Registry("dataset")


@dataclass(frozen=True)
class DataShape:
    """What a dataset looks like, known from its config alone (no file read): lets an ablation's
    model, split and schedule be checked before anything runs."""

    input_shape: tuple[int, int, int]  # C, H, W
    num_classes: int
    train_pool: int  # training examples before the validation split
    test: int


# Readers whose shape the config fixes register it here (image folders are only known once read).
SHAPES: Registry[Callable[[DatasetSpec], DataShape]] = Registry("dataset shape")


def cached(sources: Sources) -> Callable[[Loader], Loader]:
    """Mark a loader as cacheable: `sources(spec)` lists the files whose identity keys the cache.

    `sources` returns None while the files are missing (the loader then downloads or raises). Loaders
    without this mark (synthetic, user-registered ones) are simply called every time.
    """

    def deco(loader: Loader) -> Loader:
        loader.sources = sources  # type: ignore[attr-defined]
        return loader

    return deco


def _where(root: Path) -> str:
    return f"'{root}'" if root.is_absolute() else f"'{root}' (= '{root.absolute()}')"


def _options(download: bool, jpeg_hint: bool) -> list[str]:
    lines = ["Options:", "  - point at a folder that has it: --data-root DIR (sets dataset.root)"]
    if download:
        lines.append("  - let torchvision fetch it: dataset.download: true (needs internet)")
    if jpeg_hint:
        lines.append(
            "  - use a JPEG copy instead: dataset.name: image_folder with dataset.root set to a folder"
            " or .tar.xz holding train/<class>/*.jpg and test/<class>/*.jpg"
        )
    return lines


def missing_error(
    what: str, root: Path, expected: str, download: bool = False, jpeg_hint: bool = True
) -> DatasetError:
    """The one 'not found' message every reader uses, listing the ways out."""
    head = [f"{what} not found under dataset.root = {_where(root)}.", f"Expected: {expected}."]
    return DatasetError("\n".join(head + _options(download, jpeg_hint)))


def download_error(what: str, root: Path, exc: BaseException) -> DatasetError:
    """Wraps a failed torchvision download (typically: no internet) into the same actionable form."""
    head = (
        f"Downloading {what} into dataset.root = {_where(root)} failed: {type(exc).__name__}: {exc}"
    )
    return DatasetError("\n".join([head, *_options(download=False, jpeg_hint=True)]))


def torchvision_download(what: str, root: Path, dataset: str) -> None:
    """torchvision's own download of `dataset` (a class of torchvision.datasets) into `root`; its
    many network errors become one DatasetError that says what to do offline."""
    try:
        import torchvision.datasets as tvd

        getattr(tvd, dataset)(str(root), train=True, download=True)
    except Exception as e:  # network errors come in many types
        raise download_error(what, root, e) from e
