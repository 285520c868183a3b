"""Instability analysis (linear mode connectivity; Frankle, Dziugaite, Roy & Carbin 2020).

Is the network at step k stable to SGD noise? From W_k (the dense net at step k of round 0, or
m * W_k for an IMP level with mask m) train two copies to the end of the round, T - k steps with the
same mask and hyperparameters, differing only in SGD noise (data order; augmentation draws would
come from the same generator): their noise seeds are independent of the init seed. On the linear
path W_a = a W1 + (1 - a) W2, a on `points` evenly spaced values in [0, 1], the error
E(W_a) = 1 - accuracy, on the test set and on a fixed training subset, gives

    instability = max_a E(W_a) - (E(W1) + E(W2)) / 2;

the network is stable when it is below a threshold (2 points in the paper). The path includes both
ends, so instability >= |E(W1) - E(W2)| / 2 >= 0 by definition. For a convex loss the loss along the
path lies below the chord between its ends; `loss_barrier` (max over a of the loss minus that chord)
is the quantity convexity bounds by zero, recorded beside the paper's measure.

Both copies start with a fresh optimizer state (only the weights are captured at k); the training
schedule has no learning-rate or augmentation schedule that would need to be resumed at step k.

BatchNorm: the running statistics of W_a are either interpolated with the parameters
(`interpolate`) or recomputed on fixed training batches at every a (`recompute`, the default): the
averaged statistics of two networks do not describe the averaged network's activations, which would
add a barrier that is not in the weights. Nets without BatchNorm are unaffected by the choice.
No Ray, no MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lth_ray.lottery.data import DataSplits
from lth_ray.lottery.fit import fit
from lth_ray.lottery.pruning import Masks, apply_masks
from lth_ray.lottery.schedule import Steps
from lth_ray.lottery.train import StateDict, evaluate
from lth_ray.specs import TrainSpec

BN_MODES = ("recompute", "interpolate")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def alphas(points: int) -> list[float]:
    """`points` evenly spaced values in [0, 1], both ends included."""
    if points < 2:
        raise ValueError(f"points must be at least 2, got {points}")
    return [i / (points - 1) for i in range(points)]


def interpolate(w1: StateDict, w2: StateDict, alpha: float, masks: Masks) -> StateDict:
    """alpha * w1 + (1 - alpha) * w2 for floating tensors (integer buffers, such as BatchNorm's
    batch counter, come from w1); the shared mask stays intact: pruned weights stay exactly 0."""
    out: StateDict = {}
    for k, a in w1.items():
        b = w2[k]
        out[k] = alpha * a + (1 - alpha) * b if a.is_floating_point() else a.clone()
        if k in masks:
            out[k] = out[k] * masks[k].to(out[k].device, out[k].dtype)
    return out


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Replace every BatchNorm's running statistics by their plain average over x, in batches."""
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    was_training = model.training
    model.train()
    for i in range(0, len(x), batch_size):
        model(x[i : i + batch_size])
    model.train(was_training)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum


@dataclass
class PathErrors:
    """The errors (and losses) along the path, one entry per alpha; index 0 is W2, -1 is W1."""

    alphas: list[float]
    error: dict[str, list[float]] = field(default_factory=dict)  # split -> E(W_a)
    loss: dict[str, list[float]] = field(default_factory=dict)  # split -> mean cross-entropy

    def instability(self, split: str) -> float:
        return instability(self.error[split])

    def loss_barrier(self, split: str) -> float:
        return loss_barrier(self.loss[split], self.alphas)


def instability(errors: list[float]) -> float:
    """max over the path minus the mean of the two ends (errors[0] = W2, errors[-1] = W1)."""
    return max(errors) - 0.5 * (errors[0] + errors[-1])


def loss_barrier(losses: list[float], alpha: list[float]) -> float:
    """max over the path of the loss above the chord between the ends: <= 0 for a convex loss."""
    l2, l1 = losses[0], losses[-1]
    return max(v - (a * l1 + (1 - a) * l2) for v, a in zip(losses, alpha))


def error_path(
    model: nn.Module,
    w1: StateDict,
    w2: StateDict,
    masks: Masks,
    points: int,
    sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    spec: TrainSpec,
    bn: str = "recompute",
    bn_x: torch.Tensor | None = None,
) -> PathErrors:
    """E(W_a) on every (x, y) in `sets` for each alpha; BatchNorm statistics as `bn` says."""
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    device = next(model.parameters()).device
    recompute = bn == "recompute" and has_batchnorm(model)
    if recompute and bn_x is None:
        raise ValueError("recomputing BatchNorm statistics needs training batches (bn_x)")
    path = PathErrors(alphas(points), {s: [] for s in sets}, {s: [] for s in sets})
    for a in path.alphas:
        model.load_state_dict(interpolate(w1, w2, a, masks))
        if recompute:
            recompute_batchnorm(model, bn_x, spec.batch_size)
        for split, (x, y) in sets.items():
            loss, acc = evaluate(model, x, y, spec, device)
            path.error[split].append(1.0 - acc)
            path.loss[split].append(loss)
    return path


def train_copy(
    model: nn.Module,
    start: StateDict,
    masks: Masks,
    data: DataSplits,
    spec: TrainSpec,
    steps: Steps,
    noise_seed: int,
) -> StateDict:
    """One copy: from `start` under `masks` for `steps`, its SGD noise from `noise_seed` alone;
    the weights after the last step."""
    device = next(model.parameters()).device
    model.load_state_dict(start)
    on_device = {k: v.to(device) for k, v in masks.items()}
    with torch.no_grad():
        apply_masks(model, on_device)
    if steps[0] > 0:
        fit(model, on_device, data, spec, steps, torch.Generator().manual_seed(noise_seed))
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class PairResult:
    """One noise pair's analysis: the path and its summaries (errors as fractions)."""

    path: PathErrors
    bn: str  # what was done with BatchNorm statistics ("none" for nets without BatchNorm)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for split in self.path.error:
            e = self.path.error[split]
            out[f"instability_{split}"] = self.path.instability(split)
            out[f"loss_barrier_{split}"] = self.path.loss_barrier(split)
            out[f"error_w1_{split}"], out[f"error_w2_{split}"] = e[-1], e[0]
        return out


def training_subset(data: DataSplits, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed training subset errors are measured on: the first `size` training examples."""
    return data.train_x[:size], data.train_y[:size]


def analyse_pair(
    model: nn.Module,
    start: StateDict,
    masks: Masks,
    data: DataSplits,
    spec: TrainSpec,
    steps: Steps,
    noise: tuple[int, int],
    points: int = 30,
    train_subset: int = 10_000,
    bn: str = "recompute",
) -> PairResult:
    """Train the two copies from `start` (= W_k, masked) with noise seeds `noise` and measure
    the error along the linear path between them."""
    w1 = train_copy(model, start, masks, data, spec, steps, noise[0])
    w2 = train_copy(model, start, masks, data, spec, steps, noise[1])
    device = next(model.parameters()).device
    w1 = {k: v.to(device) for k, v in w1.items()}
    w2 = {k: v.to(device) for k, v in w2.items()}
    sub = training_subset(data, train_subset)
    sets = {"test": (data.test_x, data.test_y), "train": sub}
    path = error_path(model, w1, w2, masks, points, sets, spec, bn, bn_x=sub[0])
    return PairResult(path, bn if has_batchnorm(model) else "none")
