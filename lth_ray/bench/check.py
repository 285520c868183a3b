"""Does the fast path compute what the plain loop computes? Rounds from the same state, compared.

Every comparison starts two copies from the same weights, masks (half the prunable weights off) and
data-order generator. Three questions, because Adam makes long trajectories chaotic: a float-level
difference in a near-zero gradient becomes a step of about lr, so after a few dozen steps two runs
that differ only in rounding drift apart by a sizeable fraction of the distance trained (measured on
CPU: fp32 with channels_last vs without, 1e-5 after 3 steps, 0.1 after 30). Hence:

- step: after ONE step of the fast path and of the plain loop (`fast_path: off`) the weights agree
  to float tolerance (graph + capturable Adam vs eager + host-side Adam);
- round: over a whole round (2 epochs, a partial last batch unless drop_last, a rewind point) both
  give the same epochs and iterations, pruned weights exactly 0, and per-epoch losses within
  `LOSS_TOLERANCE` of the precision; their weight gap is reported, not judged;
- graph (CUDA only): the graphed round and the same round run eagerly with the same capturable
  optimizer and deterministic cuDNN agree to `GRAPH_TOLERANCE` over the whole round: replaying the
  graph is the eager computation.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from lth_ray.config import DatasetSpec, ModelSpec, TrainSpec
from lth_ray.data import load_dataset
from lth_ray.fastpath import FastPathOptions, train_fast
from lth_ray.models import build_model
from lth_ray.pruning import apply_masks, dense_masks
from lth_ray.train import StateDict, TrainResult, train

# ||w_a - w_b|| / ||w_a - w_start|| after one step (bf16 with channels_last: other kernels, measured 1e-3 on CPU).
STEP_TOLERANCE = {"fp32": 1e-4, "tf32": 1e-3, "bf16": 1e-2}
# Nats, per-epoch train and validation loss over a round (40 Adam steps). bf16 rounds to 2^-8
# relative, about 1e-2 nats on a loss near 2.3 in a single forward pass, before Adam amplifies it:
# on an H200 the plain-vs-graphed gap measured 1.1e-2 to 1.7e-2 in bf16 (NCHW) while the graph
# replayed the eager computation bit for bit, so bf16 gets a bf16-sized bound.
LOSS_TOLERANCE = {"fp32": 1e-2, "tf32": 1e-2, "bf16": 3e-2}
GRAPH_TOLERANCE = 1e-5  # graph replay vs the same eager step


@dataclasses.dataclass(frozen=True)
class Size:
    n_train: int = 1230  # 20 batches of 60 + a 30-example tail
    shape: tuple[int, int, int] = (3, 32, 32)
    width: float = 0.5

    @classmethod
    def for_device(cls, device: torch.device) -> Size:
        return cls() if device.type == "cuda" else cls(n_train=190, shape=(3, 8, 8), width=0.125)


def _setup(device: torch.device, size: Size):
    spec = DatasetSpec(
        name="synthetic",
        val_size=200,
        synthetic_train=size.n_train + 200,
        synthetic_test=200,
        synthetic_shape=list(size.shape),
    )
    data = load_dataset(spec).to(device)
    model = build_model(
        ModelSpec(arch="conv4", padding="same", width=size.width), size.shape, data.num_classes, 0
    )
    model = model.to(device)
    masks = dense_masks(model)
    g = torch.Generator().manual_seed(7)
    for k in list(masks)[:-1]:
        masks[k] = (torch.rand(masks[k].shape, generator=g) >= 0.5).to(device)
    apply_masks(model, masks)
    return data, model, masks


def run_round(
    device: torch.device,
    spec: TrainSpec,
    steps: tuple[int, str],
    size: Size,
    options: FastPathOptions | None,
) -> tuple[TrainResult, StateDict, dict[str, torch.Tensor]]:
    """One round from the fixed start: the plain loop when `options` is None, else `train_fast`."""
    data, model, masks = _setup(device, size)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(11)
    rewind = (3, "it")
    if options is None:
        result = train(
            model,
            masks,
            data,
            dataclasses.replace(spec, fast_path="off"),
            steps,
            gen,
            rewind_at=rewind,
        )
    else:
        result = train_fast(model, masks, data, spec, steps, gen, rewind_at=rewind, options=options)
    return result, start, masks


def weight_gap(a: StateDict, b: StateDict, start: StateDict) -> float:
    """||a - b|| / ||a - start|| over all tensors: the gap relative to the distance trained."""
    gap = sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in a) ** 0.5
    moved = (
        sum(float((a[k].float() - start[k].float().to(a[k].device)).pow(2).sum()) for k in a) ** 0.5
    )
    return gap / max(moved, 1e-30)


def _pruned_zero(result: TrainResult, masks: dict[str, torch.Tensor]) -> bool:
    states = [result.final, result.best] + ([result.rewind] if result.rewind is not None else [])
    return all(
        bool((s[k][~m.to(s[k].device)] == 0).all()) for s in states for k, m in masks.items()
    )


def _compare(a: TrainResult, b: TrainResult, start: StateDict) -> dict[str, Any]:
    gaps = {
        state: weight_gap(getattr(a, state), getattr(b, state), start)
        for state in ("final", "best", "rewind")
        if getattr(a, state) is not None and getattr(b, state) is not None
    }
    return {
        "weight_gap": max(gaps.values()),
        "weight_gaps": gaps,
        "rewind_both_or_neither": (a.rewind is None) == (b.rewind is None),
        "max_train_loss_diff": max(
            abs(x.train_loss - y.train_loss) for x, y in zip(a.curve, b.curve)
        ),
        "max_val_loss_diff": max(abs(x.val_loss - y.val_loss) for x, y in zip(a.curve, b.curve)),
        "same_epochs_and_iterations": [(e.epoch, e.iteration) for e in a.curve]
        == [(e.epoch, e.iteration) for e in b.curve],
        "images_per_s": (a.images_per_s, b.images_per_s),
    }


@contextlib.contextmanager
def deterministic_cudnn() -> Iterator[None]:
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def check_precision(
    device: torch.device | str,
    precision: str = "fp32",
    drop_last: bool = False,
    channels_last: bool = False,
    size: Size | None = None,
) -> dict[str, Any]:
    """The step, round and (CUDA) graph checks for one configuration; `ok` when all pass."""
    device = torch.device(device)
    size = size or Size.for_device(device)
    spec = TrainSpec(batch_size=60, lr=1e-3, precision=precision, drop_last=drop_last)  # type: ignore[arg-type]
    fast = FastPathOptions(channels_last=channels_last)
    out: dict[str, Any] = {
        "device": str(device),
        "precision": precision,
        "drop_last": drop_last,
        "channels_last": channels_last,
        "n_train": size.n_train,
        "graphed": device.type == "cuda",
    }
    plain1, start, _ = run_round(device, spec, (1, "it"), size, None)
    fast1, _, _ = run_round(device, spec, (1, "it"), size, fast)
    out["step_gap"] = weight_gap(plain1.final, fast1.final, start)
    out["step_tolerance"] = STEP_TOLERANCE[precision]
    out["loss_tolerance"] = LOSS_TOLERANCE[precision]

    plain, start, masks = run_round(device, spec, (2, "ep"), size, None)
    fastr, _, _ = run_round(device, spec, (2, "ep"), size, fast)
    rnd = _compare(plain, fastr, start)
    out["round"] = rnd
    out["iterations"] = plain.curve[-1].iteration
    out["pruned_weights_zero"] = _pruned_zero(plain, masks) and _pruned_zero(fastr, masks)
    ok = (
        out["step_gap"] <= STEP_TOLERANCE[precision]
        and out["pruned_weights_zero"]
        and rnd["same_epochs_and_iterations"]
        and rnd["rewind_both_or_neither"]
        and rnd["max_train_loss_diff"] <= LOSS_TOLERANCE[precision]
        and rnd["max_val_loss_diff"] <= LOSS_TOLERANCE[precision]
    )
    if device.type == "cuda":
        with deterministic_cudnn():
            eager = dataclasses.replace(fast, graph=False, capturable=True)
            a, start, _ = run_round(device, spec, (2, "ep"), size, eager)
            b, _, _ = run_round(device, spec, (2, "ep"), size, fast)
        g = _compare(a, b, start)
        out["graph"] = g
        out["graph_tolerance"] = GRAPH_TOLERANCE
        ok = ok and g["weight_gap"] <= GRAPH_TOLERANCE and g["same_epochs_and_iterations"]
    out["ok"] = bool(ok)
    return out


def run_checks(
    device: torch.device | str, precisions: tuple[str, ...] = ("fp32", "tf32", "bf16")
) -> list[dict[str, Any]]:
    """What `python -m lth_ray.bench --check` runs: per precision with a tail batch and with drop_last;
    bf16 also with channels_last."""
    out = []
    for precision in precisions:
        out.append(check_precision(device, precision, drop_last=False))
        out.append(check_precision(device, precision, drop_last=True))
        if precision == "bf16":
            out.append(check_precision(device, precision, drop_last=True, channels_last=True))
    return out


def format_check(r: dict[str, Any]) -> str:
    rnd = r["round"]
    text = (
        f"{'OK  ' if r['ok'] else 'FAIL'} {r['precision']:>4}{'+cl' if r['channels_last'] else '   '} "
        f"drop_last={r['drop_last']!s:<5} step gap {r['step_gap']:.1e} (tol {r['step_tolerance']:.0e}); "
        f"round: loss diff {max(rnd['max_train_loss_diff'], rnd['max_val_loss_diff']):.1e} (tol {LOSS_TOLERANCE[r['precision']]:.0e}), "
        f"weight gap {rnd['weight_gap']:.1e}, pruned zero {r['pruned_weights_zero']}"
    )
    if "graph" in r:
        text += (
            f"; graph vs eager gap {r['graph']['weight_gap']:.1e} (tol {r['graph_tolerance']:.0e})"
        )
    return text
