"""Images in `train/<class>/*` and `test/<class>/*`, as a folder or a tar archive (read in place).

Every image is converted to RGB (grayscale ones too, so one folder always gives 3 channels) and all
must share one size. Labels are the class folder names sorted alphabetically (train's classes); the
examples of each split are ordered by (class, file name), whatever the archive order.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lth_ray.lottery.datasets.base import DATASETS, DatasetError, RawData, cached, missing_error
from lth_ray.specs import DatasetSpec

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}
ARCHIVE_EXTS = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2")
SPLITS = ("train", "test")
LAYOUT = "train/<class>/*.jpg|png|bmp and test/<class>/*, optionally inside one top-level folder"

Item = tuple[str, str, str]  # split, class, file name


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_EXTS)


def _parse(parts: list[str]) -> Item | None:
    """(split, class, file) for 'split/class/file' paths with an image extension, else None."""
    if len(parts) != 3 or parts[0] not in SPLITS or parts[2].startswith("."):
        return None
    if os.path.splitext(parts[2])[1].lower() not in IMAGE_EXTS:
        return None
    return parts[0], parts[1], parts[2]


def _tree(root: Path) -> Path | None:
    """The folder holding train/ and test/: `root` or its only subfolder."""
    if all((root / s).is_dir() for s in SPLITS):
        return root
    subs = (
        [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if root.is_dir()
        else []
    )
    if len(subs) == 1 and all((subs[0] / s).is_dir() for s in SPLITS):
        return subs[0]
    return None


def _folder_files(tree: Path) -> list[tuple[Item, Path]]:
    out = []
    for split in SPLITS:
        for cls in sorted(os.scandir(tree / split), key=lambda e: e.name):
            if cls.is_dir():
                for f in os.scandir(cls.path):
                    item = _parse([split, cls.name, f.name])
                    if item and f.is_file():
                        out.append((item, Path(f.path)))
    return out


def _sources(spec: DatasetSpec) -> list[Path] | None:
    root = Path(spec.root).expanduser()
    if is_archive(root):
        return [root] if root.is_file() else None
    tree = _tree(root) if root.is_dir() else None
    return None if tree is None else sorted(p for _, p in _folder_files(tree))


def _decode(data: bytes, where: str) -> np.ndarray:
    """One image as an RGB uint8 array [H, W, 3]."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"cannot decode image '{where}': {e}") from e


def _read_archive(path: Path) -> dict[Item, np.ndarray]:
    """Stream the archive once (xz cannot seek cheaply), decoding images as they pass."""
    try:
        return _stream_archive(path)
    except (tarfile.TarError, EOFError, OSError) as e:  # truncated, corrupt or not an archive
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(
            f"cannot read the archive '{path}' ({type(e).__name__}: {e}): is it complete? "
            f"expected a .tar.xz/.tar.gz of {LAYOUT}"
        ) from None


def _stream_archive(path: Path) -> dict[Item, np.ndarray]:
    images: dict[Item, np.ndarray] = {}
    tops: set[str] = set()
    with tarfile.open(path, "r|*") as tar:
        for m in tar:
            parts = m.name.strip("/").split("/")
            if parts and parts[0] == ".":
                parts = parts[1:]
            top = ""
            if len(parts) == 4:
                top, parts = parts[0], parts[1:]
            item = _parse(parts) if m.isfile() else None
            if item is None:
                continue
            tops.add(top)
            f = tar.extractfile(m)
            assert f is not None
            images[item] = _decode(f.read(), f"{path}:{m.name}")
    if len(tops) > 1:
        raise DatasetError(
            f"'{path}' mixes several top-level folders ({sorted(tops)}); expected {LAYOUT}"
        )
    return images


def _assemble(images: dict[Item, np.ndarray], where: Path) -> RawData:
    classes = sorted({c for s, c, _ in images if s == "train"})
    if not classes or not any(s == "test" for s, _, _ in images):
        raise missing_error("Image-folder data", where, LAYOUT, jpeg_hint=False)
    unknown = sorted({c for s, c, _ in images if s == "test"} - set(classes))
    if unknown:
        raise DatasetError(
            f"'{where}': test classes {unknown} have no train/ folder (train classes: {classes})"
        )
    label = {c: i for i, c in enumerate(classes)}
    first_key = min(images)
    shape = images[first_key].shape
    out: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        keys = sorted(k for k in images if k[0] == split)
        for k in keys:
            if images[k].shape != shape:
                raise DatasetError(
                    f"'{where}': images must share one size, but {'/'.join(first_key)} is "
                    f"{shape[1]}x{shape[0]} and {'/'.join(k)} is {images[k].shape[1]}x{images[k].shape[0]}; "
                    "resize them first"
                )
        x = np.stack([images[k] for k in keys]).transpose(0, 3, 1, 2)
        out[f"{split}_x"] = torch.from_numpy(np.ascontiguousarray(x))
        out[f"{split}_y"] = torch.tensor([label[k[1]] for k in keys], dtype=torch.int64)
    return RawData(**out, classes=classes)


@DATASETS.register("image_folder")
@cached(_sources)
def load_image_folder(spec: DatasetSpec) -> RawData:
    root = Path(spec.root).expanduser()
    if is_archive(root):
        if not root.is_file():
            raise missing_error("Image archive", root, f"an archive with {LAYOUT}", jpeg_hint=False)
        return _assemble(_read_archive(root), root)
    tree = _tree(root) if root.is_dir() else None
    if tree is None:
        raise missing_error("Image-folder data", root, LAYOUT, jpeg_hint=False)
    images = {item: _decode(p.read_bytes(), str(p)) for item, p in _folder_files(tree)}
    return _assemble(images, root)
