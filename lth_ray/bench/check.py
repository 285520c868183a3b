"""Does the fast path compute what the plain loop computes? One round each, from the same state.

Both rounds start from the same weights, masks (half the prunable weights off) and data-order
generator; one runs `train` with `fast_path: off` (the plain eager loop), the other `train_fast`
(CUDA graph where the device is CUDA, the same step eagerly elsewhere). They must agree to float
tolerance: the graph replays the same kernels, and Adam differs only in where its bias correction
is computed (on the device with capturable state). Pruned weights must be exactly zero in both.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lth_ray.config import DatasetSpec, ModelSpec, TrainSpec
from lth_ray.data import load_dataset
from lth_ray.fastpath import FastPathOptions, train_fast
from lth_ray.models import build_model
from lth_ray.pruning import apply_masks, dense_masks
from lth_ray.train import TrainResult, train

# Tolerances on weights after a short round, relative to each tensor's largest magnitude.
TOLERANCE = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 3e-2}


def _setup(device: torch.device, n_train: int, shape: list[int]):
    data = load_dataset(
        DatasetSpec(
            name="synthetic",
            val_size=200,
            synthetic_train=n_train + 200,
            synthetic_test=200,
            synthetic_shape=shape,
        )
    ).to(device)
    model = build_model(
        ModelSpec(arch="conv4", padding="same", width=0.5), data.input_shape, data.num_classes, 0
    ).to(device)
    masks = dense_masks(model)
    g = torch.Generator().manual_seed(7)
    for k in list(masks)[:-1]:
        masks[k] = (torch.rand(masks[k].shape, generator=g) >= 0.5).to(device)
    apply_masks(model, masks)
    return data, model, masks


def _round(
    fast: bool,
    device: torch.device,
    spec: TrainSpec,
    n_train: int,
    shape: list[int],
    options: FastPathOptions | None,
) -> tuple[TrainResult, dict]:
    data, model, masks = _setup(device, n_train, shape)
    gen = torch.Generator().manual_seed(11)
    if fast:
        result = train_fast(
            model, masks, data, spec, (2, "ep"), gen, rewind_at=(5, "it"), options=options
        )
    else:
        result = train(
            model,
            masks,
            data,
            dataclasses.replace(spec, fast_path="off"),
            (2, "ep"),
            gen,
            rewind_at=(5, "it"),
        )
    return result, masks


def compare_rounds(
    device: torch.device | str,
    precision: str = "fp32",
    drop_last: bool = False,
    n_train: int = 1230,
    shape: list[int] | None = None,
    options: FastPathOptions | None = None,
) -> dict[str, Any]:
    """A plain round and a fast round from the same state; the largest differences and a verdict."""
    device = torch.device(device)
    shape = shape or [3, 32, 32]
    spec = TrainSpec(batch_size=60, lr=1e-3, precision=precision, drop_last=drop_last)  # type: ignore[arg-type]
    plain, masks = _round(False, device, spec, n_train, shape, None)
    fast, _ = _round(True, device, spec, n_train, shape, options)
    tol = TOLERANCE[precision]
    worst = 0.0
    for state in ("final", "best", "rewind"):
        a, b = getattr(plain, state), getattr(fast, state)
        for k in a:
            scale = max(float(a[k].abs().max()), 1e-12)
            worst = max(worst, float((a[k].float() - b[k].float()).abs().max()) / scale)
    zeros_ok = all(
        bool((r.final[k][~m.to(r.final[k].device)] == 0).all())
        and bool((r.best[k][~m.to(r.best[k].device)] == 0).all())
        for r in (plain, fast)
        for k, m in masks.items()
    )
    loss_gap = max(abs(p.train_loss - f.train_loss) for p, f in zip(plain.curve, fast.curve))
    same_shape = [(e.epoch, e.iteration) for e in plain.curve] == [
        (e.epoch, e.iteration) for e in fast.curve
    ]
    ok = worst <= tol and zeros_ok and same_shape and plain.best_epoch == fast.best_epoch
    return {
        "device": str(device),
        "precision": precision,
        "drop_last": drop_last,
        "n_train": n_train,
        "iterations": plain.curve[-1].iteration,
        "max_rel_weight_diff": worst,
        "tolerance": tol,
        "max_train_loss_diff": loss_gap,
        "pruned_weights_zero": zeros_ok,
        "same_epochs_and_iterations": same_shape,
        "same_best_epoch": plain.best_epoch == fast.best_epoch,
        "plain_images_per_s": plain.images_per_s,
        "fast_images_per_s": fast.images_per_s,
        "ok": ok,
    }


def run_checks(
    device: torch.device | str, precisions: tuple[str, ...] = ("fp32", "tf32", "bf16")
) -> list[dict[str, Any]]:
    """The checks `python -m lth_ray.bench --check` runs: each precision, with and without a tail batch."""
    out = []
    for precision in precisions:
        out.append(
            compare_rounds(device, precision, drop_last=False)
        )  # 1230 = 20 x 60 + a 30-example tail
        out.append(
            compare_rounds(
                device,
                precision,
                drop_last=True,
                options=FastPathOptions(channels_last=precision == "bf16"),
            )
        )
    return out
