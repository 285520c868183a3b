"""Generated data for tests and smoke runs: learnable in a few epochs, not at once, identical per spec.

Each class has one smooth random prototype image; an example is its class prototype plus strong
per-pixel Gaussian noise, quantised to uint8. The noise is scaled to the image size so the task is
about equally hard at any shape. Seeds are fixed (never the model seed); the prototypes, the train
set and the test set each have their own generator, so e.g. `synthetic_train` leaves the test set as is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lth_ray.lottery.datasets.base import DATASETS, SHAPES, DataShape, RawData
from lth_ray.specs import DatasetSpec

DATA_SEED = 20_190_305
NOISE = 64.0  # per-pixel noise std, in 0..255 units
SEPARATION = 7.0  # expected prototype distance / (2 * noise); tuned so small nets climb to ~80-100% in ~5 epochs


def _prototypes(classes: int, shape: tuple[int, int, int]) -> torch.Tensor:
    c, h, w = shape
    g = torch.Generator().manual_seed(DATA_SEED)
    coarse = torch.randn(classes, c, max(1, h // 4), max(1, w // 4), generator=g)
    smooth = (
        F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        if h * w > 1
        else coarse
    )
    smooth = smooth / smooth.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    # distance between two prototypes ~ amp * sqrt(2 * c * h * w); pick amp for the wanted separation
    amp = 2 * SEPARATION * NOISE / math.sqrt(2 * c * h * w)
    return 127.5 + amp * smooth


def _sample(protos: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % protos.shape[0]
    y = y[torch.randperm(n, generator=g)]
    x = protos[y] + NOISE * torch.randn((n, *protos.shape[1:]), generator=g)
    return x.round().clamp(0, 255).to(torch.uint8), y.to(torch.int64)


@SHAPES.register("synthetic")
def synthetic_shape(spec: DatasetSpec) -> DataShape:
    c, h, w = spec.synthetic_shape
    return DataShape((c, h, w), spec.synthetic_classes, spec.synthetic_train, spec.synthetic_test)


@DATASETS.register("synthetic")
def load_synthetic(spec: DatasetSpec) -> RawData:
    shape = tuple(spec.synthetic_shape)
    if len(shape) != 3 or min(shape) < 1 or spec.synthetic_classes < 2:
        raise ValueError(
            f"synthetic data needs dataset.synthetic_shape = [C, H, W] and >= 2 classes, "
            f"got {spec.synthetic_shape} and {spec.synthetic_classes}"
        )
    protos = _prototypes(spec.synthetic_classes, shape)  # type: ignore[arg-type]
    train_x, train_y = _sample(protos, spec.synthetic_train, DATA_SEED + 1)
    test_x, test_y = _sample(protos, spec.synthetic_test, DATA_SEED + 2)
    classes = [f"class_{i}" for i in range(spec.synthetic_classes)]
    return RawData(train_x, train_y, test_x, test_y, classes)
