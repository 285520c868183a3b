"""Which training loop a round runs: the fast path on CUDA (`fastpath.train_fast`, one CUDA graph per
step), the plain loop (`train.train`) everywhere else or when asked. Both compute the same thing
(tests/test_fastpath_checks.py); this module is the only one that knows both, so neither imports
the other.
"""

from __future__ import annotations

import torch
from torch import nn

from lth_ray.lottery import fastpath
from lth_ray.lottery.data import DataSplits
from lth_ray.lottery.pruning import Masks
from lth_ray.lottery.schedule import Steps
from lth_ray.lottery.train import Augmenter, StepFactory, TrainResult, train
from lth_ray.specs import TrainSpec


def fit(
    model: nn.Module,
    masks: Masks,
    data: DataSplits,
    spec: TrainSpec,
    steps: Steps,
    generator: torch.Generator,
    rewind_at: Steps | list[Steps] | None = None,
    step_factory: StepFactory | None = None,
    start: int = 0,
    lrs: torch.Tensor | None = None,
    augment: Augmenter | None = None,
) -> TrainResult:
    """Train `model` in place under `masks` for `steps`; data order from `generator`, from step
    `start` of the round's stream; SGD's learning rate per step from `lrs`; augmentation draws per
    epoch from `augment`.

    A custom `step_factory` (the benchmark's, a test's) always runs in the plain loop."""
    device = next(model.parameters()).device
    if step_factory is None and device.type == "cuda" and spec.fast_path == "auto":
        return fastpath.train_fast(
            model, masks, data, spec, steps, generator, rewind_at, None, start, lrs, augment
        )
    return train(
        model, masks, data, spec, steps, generator, rewind_at, step_factory, start, lrs, augment
    )
