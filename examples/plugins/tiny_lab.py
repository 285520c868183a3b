"""An example lth_ray plugin: a model, a dataset and a pruning criterion of one's own, no fork.

An ablation lists this file under `plugins:`; lth_ray imports it before validating the ablation and
in every Ray worker, so the names below can be used like the built-in ones (`model.arch: tiny_mlp`,
`dataset.name: rings`, `prune.criterion: magnitude_times_movement`).

What each registry expects (see `lth_ray.lottery.models`, `lth_ray.lottery.datasets.base` and
`lth_ray.lottery.pruning`):
- MODELS: `builder(spec: ModelSpec, input_shape: (C, H, W), num_classes) -> nn.Module`, its Linear
  and Conv2d layers registered in forward order (the last Linear is the output layer);
- DATASETS: `loader(spec: DatasetSpec) -> RawData` (uint8 images N x C x H x W and int64 labels);
  SHAPES, optional: what the config fixes of the data's shape, so `--dry-run` can check the model;
- CRITERIA: `scorer(ctx: ScoreContext, names) -> {layer: scores}` (the lowest active scores are
  pruned) or None to skip the round.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lth_ray import CRITERIA, DATASETS, MODELS
from lth_ray.lottery.datasets.base import SHAPES, DataShape, RawData
from lth_ray.lottery.models import scaled

RINGS_SEED = 7


@MODELS.register("tiny_mlp")
def tiny_mlp(spec, input_shape, num_classes) -> nn.Module:
    """A two-hidden-layer MLP, 128 units per layer at width 1."""
    features = math.prod(input_shape)
    hidden = scaled(128, spec.width)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


@SHAPES.register("rings")
def rings_shape(spec) -> DataShape:
    c, h, w = spec.synthetic_shape
    return DataShape((c, h, w), spec.synthetic_classes, spec.synthetic_train, spec.synthetic_test)


@DATASETS.register("rings")
def rings(spec) -> RawData:
    """Images of a bright ring whose radius gives the class, with pixel noise (fixed seed)."""
    c, h, w = spec.synthetic_shape
    k = spec.synthetic_classes
    yy, xx = torch.meshgrid(
        torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij"
    )
    r = (yy**2 + xx**2).sqrt()

    def sample(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, k, (n,), generator=g)
        radius = (1 + y.float() * (min(h, w) / 2 - 1) / max(k - 1, 1)).view(n, 1, 1)
        ring = torch.exp(-((r - radius) ** 2) / 2)  # n x h x w
        x = 255 * ring.unsqueeze(1).expand(n, c, h, w) + 110 * torch.randn(n, c, h, w, generator=g)
        return x.round().clamp(0, 255).to(torch.uint8), y

    train_x, train_y = sample(spec.synthetic_train, RINGS_SEED)
    test_x, test_y = sample(spec.synthetic_test, RINGS_SEED + 1)
    return RawData(train_x, train_y, test_x, test_y, [f"radius_{i}" for i in range(k)])


@CRITERIA.register("magnitude_times_movement")
def magnitude_times_movement(ctx, names):
    """Keep weights that are large at the end and moved far from where they restart."""
    return {
        n: ctx.final[n].float().abs() * (ctx.final[n].float() - ctx.init[n].float()).abs()
        for n in names
    }
