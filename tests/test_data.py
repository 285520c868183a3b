"""Dataset registry: split, scaling, cache and every reader on small files written in the real formats."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lth_ray.lottery.datasets.cifar as cifar
import lth_ray.lottery.datasets.image_folder as image_folder
from lth_ray.lottery.data import (
    DATASETS,
    DatasetError,
    DataSplits,
    load_dataset,
    load_raw,
    split_indices,
)
from lth_ray.lottery.datasets.idx import read_idx
from lth_ray.specs import DatasetSpec

PROJECT = Path(__file__).resolve().parents[1]
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
CIFAR_JPEG = PROJECT.parent / "shared" / "data" / "cifar10-jpeg.tar.xz"
CIFAR_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def synth(**kw) -> DatasetSpec:
    base = dict(name="synthetic", val_size=100, synthetic_train=600, synthetic_test=200)
    return DatasetSpec(**{**base, **kw})


def counting(monkeypatch, module, name: str) -> list[int]:
    """Wrap module.name so the test can count how often the decoder runs."""
    calls: list[int] = []
    real = getattr(module, name)

    def wrapper(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapper)
    return calls


# ----------------------------------------------------------------------------------------------
# Split and scaling.


def test_split_is_deterministic_disjoint_and_covering():
    train, val = split_indices(1000, 100, split_seed=3)
    again_train, again_val = split_indices(1000, 100, split_seed=3)
    other_train, other_val = split_indices(1000, 100, split_seed=4)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, other_val)
    assert len(train) == 900 and len(val) == 100
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))


def test_split_ignores_the_global_torch_seed():
    torch.manual_seed(1)
    a = split_indices(500, 50, split_seed=0)[1]
    torch.manual_seed(2)
    b = split_indices(500, 50, split_seed=0)[1]
    assert torch.equal(a, b)


def test_val_size_too_large_names_the_field():
    with pytest.raises(ValueError, match=r"dataset\.val_size"):
        load_dataset(synth(val_size=600))


def test_unit_scaling_and_split_sizes():
    spec = synth(split_seed=5)
    raw = load_raw(spec)
    d = load_dataset(spec)
    assert isinstance(d, DataSplits)
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (500, 100, 200)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert 0.0 <= float(d.train_x.min()) and float(d.train_x.max()) <= 1.0
    train_idx, val_idx = split_indices(600, 100, 5)
    assert torch.allclose(d.val_x, raw.train_x[val_idx].float() / 255)
    assert torch.equal(d.train_y, raw.train_y[train_idx])
    assert d.num_classes == 10 and d.input_shape == (3, 16, 16)


def test_standardize_uses_training_split_statistics():
    spec = synth(scale="standardize")
    d = load_dataset(spec)
    assert torch.allclose(d.train_x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(d.train_x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)
    raw = load_raw(spec)
    train_idx, val_idx = split_indices(600, 100, 0)
    unit = raw.train_x[train_idx].float() / 255
    mean, std = unit.mean(dim=(0, 2, 3)), unit.std(dim=(0, 2, 3))
    expected_val = (raw.train_x[val_idx].float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(d.val_x, expected_val, atol=1e-5)


def test_limits_keep_the_first_of_the_split_and_a_class_mix_of_test():
    full = load_dataset(synth())
    small = load_dataset(synth(train_limit=50, test_limit=40))
    assert torch.equal(small.train_x, full.train_x[:50])
    assert torch.equal(small.val_x, full.val_x)
    assert len(small.test_y) == 40
    assert len(small.test_y.unique()) >= 5  # drawn across classes, not one class's block


def test_splits_to_moves_every_tensor():
    d = load_dataset(synth()).to("meta")
    assert all(
        t.device.type == "meta"
        for t in (d.train_x, d.train_y, d.val_x, d.val_y, d.test_x, d.test_y)
    )
    assert d.num_classes == 10


# ----------------------------------------------------------------------------------------------
# Synthetic.


def test_synthetic_is_deterministic_balanced_and_shaped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = synth(synthetic_shape=[1, 12, 10], synthetic_classes=4)
    torch.manual_seed(123)
    a = load_raw(spec)
    torch.manual_seed(456)
    b = load_raw(spec)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.train_x.shape == (600, 1, 12, 10) and a.train_x.dtype == torch.uint8
    assert a.test_x.shape == (200, 1, 12, 10)
    assert a.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert torch.bincount(a.train_y).tolist() == [150] * 4
    assert list(tmp_path.iterdir()) == []  # nothing cached for generated data
    bigger = load_raw(synth(synthetic_shape=[1, 12, 10], synthetic_classes=4, synthetic_train=900))
    assert torch.equal(bigger.test_x, a.test_x)  # the test set does not depend on the train size


def test_synthetic_is_learnable_but_not_at_once():
    torch.manual_seed(0)
    d = load_dataset(synth(synthetic_train=1200, val_size=200, synthetic_test=400))
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(768, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def accuracy() -> float:
        with torch.no_grad():
            return float((model(d.test_x).argmax(1) == d.test_y).float().mean())

    accs = [accuracy()]
    for _ in range(6):
        for idx in torch.randperm(len(d.train_y)).split(60):
            loss = torch.nn.functional.cross_entropy(model(d.train_x[idx]), d.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        accs.append(accuracy())
    assert accs[0] < 0.3, accs  # chance before training
    assert accs[1] < 0.95, accs  # not separable after one epoch
    assert max(accs[-2:]) > 0.85, accs  # but learnt within a few


# ----------------------------------------------------------------------------------------------
# CIFAR-10 pickle batches.


def write_cifar(
    root: Path, per_batch: int = 4, n_test: int = 3, seed: int = 0
) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: dict[str, np.ndarray] = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [b"x.png"] * n,
        }
        (folder / name).write_bytes(pickle.dumps(batch))
        written[name], written[name + "_labels"] = data, np.array(labels)
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [n.encode() for n in CIFAR_NAMES],
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return written


def test_cifar10_reads_pickle_batches(tmp_path):
    w = write_cifar(tmp_path)
    raw = load_raw(DatasetSpec(name="cifar10", root=str(tmp_path), verify_checksums=False))
    assert raw.train_x.shape == (20, 3, 32, 32) and raw.train_x.dtype == torch.uint8
    assert raw.test_x.shape == (3, 3, 32, 32)
    assert raw.classes == CIFAR_NAMES
    # rows are channel-major: the first 1024 bytes are the red plane
    assert torch.equal(raw.train_x[0, 0].flatten(), torch.from_numpy(w["data_batch_1"][0, :1024]))
    assert torch.equal(raw.train_x[4, 2, 0], torch.from_numpy(w["data_batch_2"][0, 2048:2080]))
    assert raw.train_y.dtype == torch.int64
    assert raw.train_y[4:8].tolist() == w["data_batch_2_labels"].tolist()
    assert raw.test_y.tolist() == w["test_batch_labels"].tolist()


def test_cache_is_reused_and_invalidated_by_a_changed_source(tmp_path, monkeypatch):
    write_cifar(tmp_path, seed=0)
    spec = DatasetSpec(name="cifar10", root=str(tmp_path), verify_checksums=False)
    calls = counting(monkeypatch, cifar, "_read_batch")
    first = load_raw(spec)
    assert len(calls) == 6 and list((tmp_path / ".lth_cache").glob("cifar10-*.pt"))
    second = load_raw(spec)
    assert len(calls) == 6  # served from the cache
    assert torch.equal(first.train_x, second.train_x) and second.classes == CIFAR_NAMES

    w = write_cifar(tmp_path, seed=1)  # same sizes, new content
    test_batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    st = test_batch.stat()
    os.utime(test_batch, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = load_raw(spec)
    assert len(calls) == 12
    assert torch.equal(third.test_x.reshape(3, -1), torch.from_numpy(w["test_batch"]))


def test_unwritable_cache_dir_is_skipped(tmp_path, monkeypatch):
    write_cifar(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    spec = DatasetSpec(
        name="cifar10", root=str(tmp_path), cache_dir=str(blocker / "cache"), verify_checksums=False
    )
    calls = counting(monkeypatch, cifar, "_read_batch")
    assert load_raw(spec).train_x.shape[0] == 20
    assert load_raw(spec).train_x.shape[0] == 20
    assert len(calls) == 12  # decoded both times, never failed


def test_cifar10_batches_are_checked_against_the_published_md5(tmp_path):
    write_cifar(tmp_path)  # not the official files
    with pytest.raises(DatasetError, match="verify_checksums") as e:
        load_raw(DatasetSpec(name="cifar10", root=str(tmp_path)))
    assert "md5" in str(e.value) and "data_batch_1" in str(e.value)


def test_a_crafted_cifar10_batch_runs_nothing_even_unchecked(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(Payload()))
    spec = DatasetSpec(name="cifar10", root=str(tmp_path), verify_checksums=False)
    with pytest.raises(DatasetError, match="data_batch_3.*refused"):
        load_raw(spec)
    assert not marker.exists()


def test_cifar10_md5_list_is_torchvisions():
    sums = cifar.expected_md5()
    assert set(sums) == set(cifar.FILES)
    assert sums["data_batch_1"] == "c99cafc152244af753f735de768cd75f"


def test_missing_cifar_offline_explains_the_options(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as e:
        load_raw(DatasetSpec(name="cifar10", root=str(root)))
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    for needle in (
        str(root),
        "cifar-10-batches-py",
        "--data-root",
        "dataset.download: true",
        "image_folder",
    ):
        assert needle in msg, msg


def test_failed_download_is_wrapped(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetError, match="name resolution") as e:
        load_raw(DatasetSpec(name="cifar10", root=str(tmp_path), download=True))
    assert str(tmp_path) in str(e.value) and "--data-root" in str(e.value)


def test_download_then_read(tmp_path, monkeypatch):
    import torchvision.datasets

    def fake_download(root, train=True, download=False):
        assert download
        write_cifar(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_download)
    raw = load_raw(
        DatasetSpec(name="cifar10", root=str(tmp_path), download=True, verify_checksums=False)
    )
    assert raw.train_x.shape == (20, 3, 32, 32)
    assert list((tmp_path / ".lth_cache").glob("cifar10-*.pt"))


# ----------------------------------------------------------------------------------------------
# Image folders and archives.


def image_bytes(color: tuple[int, int, int], fmt: str, size=(6, 4), mode="RGB") -> bytes:
    buf = io.BytesIO()
    im = Image.new("RGB", size, color)
    (im.convert(mode) if mode != "RGB" else im).save(
        buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {})
    )
    return buf.getvalue()


# relative path -> bytes; classes deliberately not created in alphabetical order
IMAGES = {
    "train/dog/b.png": image_bytes((0, 200, 0), "PNG"),
    "train/dog/a.jpg": image_bytes((0, 0, 200), "JPEG"),
    "train/cat/z.jpeg": image_bytes((200, 0, 0), "JPEG"),
    "train/ant/1.png": image_bytes((90, 90, 90), "PNG", mode="L"),
    "train/ant/notes.txt": b"ignored",
    "test/cat/q.png": image_bytes((10, 20, 30), "PNG"),
    "test/dog/r.bmp": image_bytes((40, 50, 60), "BMP"),
}


def write_folder(root: Path, images=IMAGES) -> Path:
    for rel, data in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_image_folder_reads_jpeg_png_bmp(tmp_path):
    raw = load_raw(DatasetSpec(name="image_folder", root=str(write_folder(tmp_path / "imgs"))))
    assert raw.classes == ["ant", "cat", "dog"]
    assert raw.train_x.shape == (4, 3, 4, 6) and raw.train_x.dtype == torch.uint8
    assert raw.train_y.tolist() == [
        0,
        1,
        2,
        2,
    ]  # ordered by (class, file name): ant/1, cat/z, dog/a, dog/b
    assert raw.train_x[0].unique().tolist() == [90]  # grayscale -> 3 equal channels
    assert torch.equal(
        raw.train_x[3, :, 0, 0], torch.tensor([0, 200, 0], dtype=torch.uint8)
    )  # PNG exact
    assert (raw.train_x[1, 0].float() - 200).abs().max() < 8 and raw.train_x[
        1, 1:
    ].max() < 8  # JPEG ~
    assert raw.test_y.tolist() == [1, 2]
    assert torch.equal(raw.test_x[1, :, 2, 3], torch.tensor([40, 50, 60], dtype=torch.uint8))


def test_image_archive_with_top_level_folder_matches_the_folder(tmp_path, monkeypatch):
    folder = load_raw(DatasetSpec(name="image_folder", root=str(write_folder(tmp_path / "imgs"))))
    archive = tmp_path / "imgs.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for rel, data in IMAGES.items():
            info = tarfile.TarInfo(f"cifar-like/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    calls = counting(monkeypatch, image_folder, "_decode")
    spec = DatasetSpec(name="image_folder", root=str(archive))
    raw = load_raw(spec)
    assert len(calls) == 6
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(raw, name), getattr(folder, name)), name
    assert raw.classes == folder.classes
    assert list((tmp_path / "imgs.tar.xz.lth_cache").glob("image_folder-*.pt"))
    load_raw(spec)
    assert len(calls) == 6  # cached


def test_image_folder_requires_one_size(tmp_path):
    images = {**IMAGES, "train/cat/big.png": image_bytes((1, 2, 3), "PNG", size=(8, 8))}
    with pytest.raises(DatasetError, match="one size"):
        load_raw(DatasetSpec(name="image_folder", root=str(write_folder(tmp_path, images))))


def test_missing_image_folder_names_root_and_flag(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="--data-root") as e:
        load_raw(DatasetSpec(name="image_folder", root=str(tmp_path)))
    assert str(tmp_path) in str(e.value) and "train/<class>" in str(e.value)


# ----------------------------------------------------------------------------------------------
# idx files (MNIST, Fashion-MNIST).


def idx_bytes(a: np.ndarray) -> bytes:
    return (
        struct.pack(">BBBB", 0, 0, 0x08, a.ndim)
        + struct.pack(f">{a.ndim}i", *a.shape)
        + a.tobytes()
    )


def write_idx(folder: Path, n_train=7, n_test=3, gz=True, seed=0) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(a)))
        else:
            (folder / name).write_bytes(idx_bytes(a))
    return arrays


def test_fashion_mnist_reads_gzipped_idx(tmp_path):
    a = write_idx(tmp_path)
    raw = load_raw(DatasetSpec(name="fashion_mnist", root=str(tmp_path)))
    assert raw.train_x.shape == (7, 1, 5, 4) and raw.test_x.shape == (3, 1, 5, 4)
    assert torch.equal(raw.train_x[:, 0], torch.from_numpy(a["train-images-idx3-ubyte"]))
    assert raw.train_y.dtype == torch.int64
    assert raw.test_y.tolist() == a["t10k-labels-idx1-ubyte"].tolist()
    assert raw.classes[0] == "T-shirt/top" and len(raw.classes) == 10


def test_mnist_reads_torchvision_layout_plain_idx(tmp_path):
    a = write_idx(tmp_path / "MNIST" / "raw", gz=False, seed=2)
    raw = load_raw(DatasetSpec(name="mnist", root=str(tmp_path)))
    assert torch.equal(raw.test_x[:, 0], torch.from_numpy(a["t10k-images-idx3-ubyte"]))
    assert len(raw.classes) == 10
    with pytest.raises(DatasetError, match="--data-root"):
        load_raw(DatasetSpec(name="fashion_mnist", root=str(tmp_path)))  # wrong subfolder


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\x08\x03\x00\x00" + b"\x00" * 20)
    with pytest.raises(DatasetError, match="idx"):
        read_idx(bad)
    short = tmp_path / "y-idx1-ubyte"
    short.write_bytes(idx_bytes(np.zeros(10, np.uint8))[:-3])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(short)


def test_registry_names():
    assert {"cifar10", "image_folder", "fashion_mnist", "mnist", "synthetic"} <= set(
        DATASETS.names()
    )


# ----------------------------------------------------------------------------------------------
# Real data.


@pytest.mark.skipif(
    not (FASHION_DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)",
)
def test_real_fashion_mnist(tmp_path):
    spec = DatasetSpec(name="fashion_mnist", root=str(FASHION_DEBIAN), cache_dir=str(tmp_path))
    raw = load_raw(spec)
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(raw.train_y).tolist() == [6000] * 10
    assert torch.bincount(raw.test_y).tolist() == [1000] * 10
    assert raw.classes[-1] == "Ankle boot"
    assert 0 < float(raw.train_x.float().mean()) < 255


# The one test of the real JPEG archive end to end (tar.xz, decode, split, class names). It runs
# wherever the archive sits beside the project, CI included: ~15 s of decoding on 2 cores, a few
# percent of the suite, for the only check that the offline CIFAR-10 path users rely on works.
@pytest.mark.skipif(
    not CIFAR_JPEG.is_file(), reason="needs ../shared/data/cifar10-jpeg.tar.xz beside the project"
)
def test_real_cifar10_jpeg_archive(tmp_path):
    d = load_dataset(
        DatasetSpec(name="image_folder", root=str(CIFAR_JPEG), cache_dir=str(tmp_path))
    )
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (45000, 5000, 10000)
    assert d.classes == CIFAR_NAMES and d.input_shape == (3, 32, 32)
    assert torch.bincount(d.test_y).tolist() == [1000] * 10


def test_a_dry_run_reads_data_that_is_on_disk_even_where_download_is_on(tmp_path):
    """Reading files already there downloads nothing, and the plan needs an image folder's size."""
    from lth_ray.sweep.cli import on_disk

    folder = DatasetSpec(name="image_folder", root=str(write_folder(tmp_path / "imgs")))
    assert on_disk(dataclasses.replace(folder, download=True))
    assert not on_disk(DatasetSpec(name="image_folder", root=str(tmp_path / "none")))
    assert not on_disk(DatasetSpec(name="cifar10", root=str(tmp_path / "none"), download=True))
    assert not on_disk(DatasetSpec(name="synthetic"))  # generated, no files: nothing to read ahead
