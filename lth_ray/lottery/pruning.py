"""Masks, pruning criteria and exact-count pruning (global or layer-wise), plus sparsity accounting.

A mask is a bool tensor per weight layer (keyed by `LayerInfo.name`); biases are never pruned. A
criterion turns the weights it is given into KEEP-scores, and `prune` removes exactly
`prune_count(active, fraction)` of the lowest-scored ACTIVE weights. Ties are broken by a stable
order over (score, layer position in `names`, flat index), never by a bare threshold, so the count is
exact even when many scores are equal (a quantile threshold would remove every tied weight).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import torch
from torch import Tensor, nn

from lth_ray.lottery.models import weight_layers
from lth_ray.registry import Registry

Masks = dict[str, Tensor]
Scores = dict[str, Tensor]
SCOPES = ("global", "layerwise")
KINDS = ("conv", "fc", "output")


def dense_masks(model: nn.Module) -> Masks:
    """All-True masks for every weight layer, on the weights' devices."""
    return {
        li.name: torch.ones(
            li.module.weight.shape, dtype=torch.bool, device=li.module.weight.device
        )
        for li in weight_layers(model)
    }


def random_like(masks: Masks, names: list[str], gen: torch.Generator) -> Masks:
    """Uniformly random masks keeping each named layer's count of active weights (the ticket's
    per-layer sparsity); other layers keep their masks. Drawn on the CPU, so any device agrees."""
    out = dict(masks)
    for name in names:
        m = masks[name]
        keep = int(m.sum())
        order = torch.randperm(m.numel(), generator=gen)[:keep]
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[order] = True
        out[name] = flat.view(m.shape).to(m.device)
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero the masked-off weights in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise KeyError(f"mask {name!r} names no parameter of the model")
        params[name].mul_(mask)


def layer_keys(name: str, kind: str) -> tuple[str, ...]:
    """What a `prune.exclude` entry may call a layer: its weight's name ('fc.weight'), its module's
    name ('fc') or its kind ('output')."""
    return (name, name.removesuffix(".weight"), kind)


def prunable_names(model: nn.Module, exclude: Sequence[str]) -> list[str]:
    """Weight layers, in forward order, that no entry of `exclude` names (see `layer_keys`).

    Only Conv2d/Linear weights are layers: BatchNorm's scale and shift, biases and running
    statistics are never pruned and never counted among the prunable weights."""
    layers = weight_layers(model)
    known = {k for li in layers for k in layer_keys(li.name, li.kind)} | set(KINDS)
    unknown = [e for e in exclude if e not in known]
    if unknown:
        raise ValueError(
            f"exclude entries {unknown} match no layer name or kind (kinds: {', '.join(KINDS)}; "
            f"layers: {', '.join(li.name for li in layers)})"
        )
    return [li.name for li in layers if not set(layer_keys(li.name, li.kind)) & set(exclude)]


# ----------------------------------------------------------------------------------------------
# Criteria: keep-scores, the lowest active ones are pruned.


@dataclass
class ScoreContext:
    init: dict[str, Tensor]  # theta_0 (or the rewind point) by layer name
    best: dict[str, Tensor]  # weights at minimum validation loss of the last training
    final: dict[str, Tensor]  # weights at the last epoch of the last training
    masks: Masks  # current masks
    generator: torch.Generator  # for random criteria; the caller seeds it deterministically
    scope: str = "global"  # how the scores will be thresholded: criteria that rank follow it


Criterion = Callable[[ScoreContext, list[str]], "Scores | None"]
CRITERIA: Registry[Criterion] = Registry("criterion")


def _f(t: Tensor) -> Tensor:
    """Scores in at least float32, so bf16/fp16 weights do not collapse into ties."""
    return t.detach().to(torch.promote_types(t.dtype, torch.float32))


@CRITERIA.register("stability")
def stability(ctx: ScoreContext, names: list[str]) -> Scores | None:
    """The study's criterion: prune the weights that moved most between best-val and final epochs.

    keep = -|w_best - w_final|. Returns None (skip the round) when no active weight differs, i.e.
    the best-validation epoch was the last one and the ranking would carry no information.
    """
    if not any(bool(((ctx.best[n] != ctx.final[n]) & ctx.masks[n]).any()) for n in names):
        return None
    return {n: -(_f(ctx.best[n]) - _f(ctx.final[n])).abs() for n in names}


@CRITERIA.register("magnitude")
def magnitude(ctx: ScoreContext, names: list[str]) -> Scores:
    """Frankle & Carbin (Zhou et al.'s large_final): prune the smallest |w_final|."""
    return {n: _f(ctx.final[n]).abs() for n in names}


@CRITERIA.register("movement")
def movement(ctx: ScoreContext, names: list[str]) -> Scores:
    """Zhou et al.'s movement: prune the weights that moved least from init, |w_final - w_init|."""
    return {n: (_f(ctx.final[n]) - _f(ctx.init[n])).abs() for n in names}


@CRITERIA.register("large_init_large_final")
def large_init_large_final(ctx: ScoreContext, names: list[str]) -> Scores:
    """Zhou et al.: keep weights large both at init and at the end.

    Score = min(rank |w_init|, rank |w_final|), ranks taken over the active weights of all `names`
    together in global scope and within each layer in layer-wise scope (rank = number of active
    weights strictly smaller, so equal magnitudes share a rank), with the larger of the two ranks as
    a tie-breaker (added as a fraction below 1). Keeping the top-k by this score keeps the weights
    above the same percentile in BOTH magnitudes, the "quadrant" Zhou et al. select. Inactive
    weights score -1 (ignored by `prune`).
    """
    if ctx.scope == "layerwise" and len(names) > 1:
        scores: Scores = {}
        for n in names:
            scores.update(large_init_large_final(ctx, [n]))
        return scores
    flat_i, flat_f, sizes = [], [], []
    for n in names:
        m = ctx.masks[n]
        flat_i.append(_f(ctx.init[n])[m].abs().double())
        flat_f.append(_f(ctx.final[n])[m].abs().double())
        sizes.append(int(flat_i[-1].numel()))
    if not names:
        return {}
    vi, vf = torch.cat(flat_i), torch.cat(flat_f)
    ri, rf = _rank(vi), _rank(vf)
    combined = torch.minimum(ri, rf) + torch.maximum(ri, rf) / (vi.numel() + 1)
    scores = {}
    for n, part in zip(names, torch.split(combined, sizes)):
        s = torch.full(ctx.masks[n].shape, -1.0, dtype=torch.float64, device=part.device)
        s[ctx.masks[n]] = part
        scores[n] = s
    return scores


def _rank(values: Tensor) -> Tensor:
    """Per element, how many elements are strictly smaller (ties share the lowest rank)."""
    sorted_vals, order = torch.sort(values)
    pos = torch.arange(values.numel(), device=values.device)
    new_run = torch.ones_like(sorted_vals, dtype=torch.bool)
    new_run[1:] = sorted_vals[1:] != sorted_vals[:-1]
    run_start = torch.cummax(torch.where(new_run, pos, torch.zeros_like(pos)), 0).values
    ranks = torch.empty(values.numel(), dtype=torch.float64, device=values.device)
    ranks[order] = run_start.double()
    return ranks


@CRITERIA.register("random")
def random_scores(ctx: ScoreContext, names: list[str]) -> Scores:
    """Control: i.i.d. uniform scores drawn from `ctx.generator`, layer by layer in `names` order."""
    g = ctx.generator
    return {
        n: torch.rand(ctx.masks[n].shape, generator=g, device=g.device).to(ctx.masks[n].device)
        for n in names
    }


# ----------------------------------------------------------------------------------------------
# Exact-count pruning.


def prune_count(active: int, fraction: float) -> int:
    """round-half-up(fraction * active), at most `active`.

    The product is taken in decimal on the fraction as written (0.15 * 10 = 1.5 -> 2), so binary
    float error never flips a half.
    """
    if active < 0:
        raise ValueError(f"active must be >= 0, got {active}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    exact = Decimal(repr(float(fraction))) * Decimal(int(active))
    return min(int(active), int(exact.to_integral_value(rounding=ROUND_HALF_UP)))


def _check_inputs(scores: Scores, masks: Masks, names: Sequence[str], scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"names must be distinct, got {list(names)}")
    for n in names:
        if n not in masks:
            raise KeyError(f"no mask for layer {n!r}")
        if n not in scores:
            raise KeyError(f"no score for layer {n!r}")
        if scores[n].shape != masks[n].shape:
            raise ValueError(
                f"score of {n!r} has shape {tuple(scores[n].shape)}, mask {tuple(masks[n].shape)}"
            )
        if masks[n].dtype != torch.bool:
            raise TypeError(f"mask of {n!r} must be bool, got {masks[n].dtype}")


def _per_layer(value: object, names: Sequence[str], what: str) -> dict[str, object]:
    if isinstance(value, dict):
        missing = [n for n in names if n not in value]
        if missing:
            raise KeyError(f"layerwise {what} missing for layers {missing}")
        return {n: value[n] for n in names}
    return dict.fromkeys(names, value)


def _remove(scores: Scores, masks: Masks, groups: list[tuple[list[str], int]]) -> tuple[Masks, int]:
    """Remove the `k` lowest-scored active weights of each group of layers, ranked jointly.

    Equivalent to taking the first k of a stable sort of the concatenated active scores (layers in
    group order, row-major inside a layer), i.e. (score, layer position, flat index) order, but in
    O(n): everything below the k-th smallest score, then the earliest weights tied with it.
    """
    new = {n: m.clone(memory_format=torch.contiguous_format) for n, m in masks.items()}
    total = 0
    for group, k in groups:
        if k == 0:
            continue
        active_idx = [masks[n].reshape(-1).nonzero().squeeze(1) for n in group]
        vals = [scores[n].reshape(-1)[idx] for n, idx in zip(group, active_idx)]
        dtype = functools.reduce(torch.promote_types, [v.dtype for v in vals], torch.float32)
        flat = torch.cat([v.to(device=vals[0].device, dtype=dtype) for v in vals])
        if torch.isnan(flat).any():
            raise ValueError(f"NaN scores among the active weights of {group} (diverged training?)")
        threshold = torch.kthvalue(flat, k).values
        chosen = flat < threshold
        ties = (flat == threshold).nonzero().squeeze(1)
        chosen[ties[: k - int(chosen.sum())]] = True
        sizes = [len(i) for i in active_idx]
        for n, idx, sel in zip(group, active_idx, torch.split(chosen, sizes)):
            new[n].view(-1)[idx[sel.to(idx.device)]] = False
        total += k
    return new, total


def _active(masks: Masks, names: Sequence[str]) -> dict[str, int]:
    return {n: int(masks[n].sum()) for n in names}


def prune(
    scores: Scores,
    masks: Masks,
    names: list[str],
    fraction: float | dict[str, float],
    scope: str,
) -> tuple[Masks, int]:
    """New masks without the lowest-scored `prune_count(active, f)` active weights; (masks, pruned).

    global: one ranking over the union of `names` with one fraction; layerwise: each layer on its
    own with `fraction[name]` or the single float. Layers outside `names` keep their masks.
    """
    _check_inputs(scores, masks, names, scope)
    active = _active(masks, names)
    if scope == "global":
        if isinstance(fraction, dict):
            raise ValueError(
                "per-layer fractions need scope='layerwise'; global takes one fraction"
            )
        return _remove(scores, masks, [(list(names), prune_count(sum(active.values()), fraction))])
    fractions = _per_layer(fraction, names, "fraction")
    groups = [([n], prune_count(active[n], float(fractions[n]))) for n in names]  # type: ignore[arg-type]
    return _remove(scores, masks, groups)


def prune_to(
    scores: Scores,
    masks: Masks,
    names: list[str],
    remaining: int | dict[str, int],
    scope: str,
) -> tuple[Masks, int]:
    """Keep exactly `remaining` active weights (global total, or per layer when layerwise)."""
    _check_inputs(scores, masks, names, scope)
    active = _active(masks, names)
    if scope == "global":
        if isinstance(remaining, dict):
            raise ValueError("per-layer remaining counts need scope='layerwise'")
        groups = [(list(names), _to_remove(sum(active.values()), remaining, "the named layers"))]
    else:
        if not isinstance(remaining, dict):
            raise ValueError("scope='layerwise' needs remaining as a dict {layer name: count}")
        targets = _per_layer(remaining, names, "remaining count")
        groups = [([n], _to_remove(active[n], int(targets[n]), n)) for n in names]  # type: ignore[arg-type]
    return _remove(scores, masks, groups)


def _to_remove(active: int, remaining: int, where: str) -> int:
    if not 0 <= remaining <= active:
        raise ValueError(f"cannot keep {remaining} weights in {where}: {active} are active")
    return active - remaining


def schedule_remaining(
    active: int | dict[str, int],
    fraction: float | dict[str, float],
    rounds: int,
    scope: str,
) -> list:
    """Active counts after rounds 1..R of the iterative schedule, for one-shot trials to target.

    Global: a list of ints; layerwise: a list of {layer: count} dicts. Assumes every round prunes
    (a skipped stability round shifts an iterative trial off this grid).
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    if scope == "global":
        if isinstance(active, dict) or isinstance(fraction, dict):
            raise ValueError("scope='global' takes one active count and one fraction")
        out, left = [], int(active)
        for _ in range(rounds):
            left -= prune_count(left, fraction)
            out.append(left)
        return out
    if not isinstance(active, dict):
        raise ValueError("scope='layerwise' needs active as a dict {layer name: count}")
    fractions = _per_layer(fraction, list(active), "fraction")
    steps, left_by = [], dict(active)
    for _ in range(rounds):
        left_by = {n: c - prune_count(c, float(fractions[n])) for n, c in left_by.items()}  # type: ignore[arg-type]
        steps.append(dict(left_by))
    return steps


def layer_fractions(
    model: nn.Module, names: Sequence[str], fraction: float, per_kind: dict[str, float]
) -> dict[str, float]:
    """Per-layer fraction from the layer's kind (e.g. Frankle & Carbin: conv 0.1, fc 0.2, output 0.1)."""
    bad = [k for k in per_kind if k not in KINDS]
    if bad:
        raise ValueError(f"per_kind keys must be layer kinds {KINDS}, got {bad}")
    kinds = {li.name: li.kind for li in weight_layers(model)}
    missing = [n for n in names if n not in kinds]
    if missing:
        raise KeyError(f"layers {missing} are not weight layers of the model")
    return {n: float(per_kind.get(kinds[n], fraction)) for n in names}


# ----------------------------------------------------------------------------------------------
# Sparsity accounting.


@dataclass
class SparsityReport:
    sparsity: float  # fraction of prunable (named) weights masked off
    weights_remaining: float  # percent of prunable weights left
    sparsity_all: float  # fraction of ALL parameters (biases, excluded layers included) masked off
    zeros_all: float  # fraction of ALL parameters that are exactly zero (the study's "sparsity")
    active_weights: int  # prunable weights still active
    per_layer: dict[str, float]  # sparsity of every masked weight layer
    compression_ratio: float  # all parameters / unmasked parameters
    flops_dense: float  # FLOPs (2 x multiply-adds) of one dense forward pass, weights only
    flops_sparse: float  # same, counting only unmasked weights
    flops_reduction: float  # flops_dense / flops_sparse


@torch.no_grad()
def sparsity_report(
    model: nn.Module, masks: Masks, names: Sequence[str], input_shape: Sequence[int]
) -> SparsityReport:
    """Sparsity and FLOPs of the masked model; a layer without a mask counts as dense.

    Masked counts follow the masks; `zeros_all` counts the model's current values, so it also sees
    weights and biases that are zero without being pruned (the study's definition of sparsity).

    FLOPs: a conv costs 2 x active weights x output positions (H_out x W_out), a linear
    2 x active weights per output row; biases, activations and pooling are not counted. Output
    sizes come from forward hooks on one dummy example, so any registered model is handled.
    """
    layers = weight_layers(model)
    spatial: dict[str, int] = {li.name: 0 for li in layers}
    hooks = []
    for li in layers:

        def hook(module: nn.Module, args: object, out: Tensor, name: str = li.name) -> None:
            # positions each weight is applied at: conv -> H_out*W_out, linear -> leading dims
            per_call = (
                out.shape[2:].numel() if isinstance(module, nn.Conv2d) else out.shape[1:-1].numel()
            )
            spatial[name] += per_call

        hooks.append(li.module.register_forward_hook(hook))
    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()

    per_layer, flops_dense, flops_sparse, masked_all = {}, 0.0, 0.0, 0
    for li in layers:
        numel = li.module.weight.numel()
        kept = int(masks[li.name].sum()) if li.name in masks else numel
        masked_all += numel - kept
        per_layer[li.name] = 1.0 - kept / numel
        flops_dense += 2.0 * numel * spatial[li.name]
        flops_sparse += 2.0 * kept * spatial[li.name]
    total_named = sum(masks[n].numel() for n in names)
    active = sum(int(masks[n].sum()) for n in names)
    sparsity = 1.0 - active / total_named if total_named else 0.0
    all_params = sum(p.numel() for p in model.parameters())
    unmasked = all_params - masked_all
    return SparsityReport(
        sparsity=sparsity,
        weights_remaining=100.0 * (1.0 - sparsity),
        sparsity_all=masked_all / all_params,
        zeros_all=sum(int((p == 0).sum()) for p in model.parameters()) / all_params,
        active_weights=active,
        per_layer=per_layer,
        compression_ratio=all_params / unmasked if unmasked else math.inf,
        flops_dense=flops_dense,
        flops_sparse=flops_sparse,
        flops_reduction=flops_dense / flops_sparse if flops_sparse else math.inf,
    )
