"""Checks that need the model and the data's shape, run before anything trains.

The model is built on the meta device (shapes only: no weights, no memory) and the data's shape comes
from the config where the reader registered one (`lth_ray.lottery.datasets.SHAPES`), so `--dry-run` catches a
width that empties a layer, an `exclude` naming no layer, more rounds than weights, a split larger
than the data, or a rewind point in iterations past a round 0 counted in epochs.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math

from lth_ray.config.errors import ConfigError
from lth_ray.specs import DatasetSpec, ModelSpec, TrialConfig

NOMINAL_SHAPE = (
    3,
    32,
    32,
)  # for layer names and counts when the data's shape is only known once read


@functools.lru_cache(maxsize=64)
def _meta_model(spec: tuple, input_shape: tuple[int, int, int], num_classes: int):
    import torch

    from lth_ray.lottery.models import MODELS

    model_spec = ModelSpec(*spec)
    with torch.device("meta"):
        return MODELS.get(model_spec.arch)(model_spec, input_shape, num_classes)


def _model(spec: ModelSpec, input_shape, num_classes):
    return _meta_model(dataclasses.astuple(spec), tuple(input_shape), int(num_classes))


def train_size(d: DatasetSpec) -> int | None:
    """Training examples after the validation split and `train_limit`, when the config fixes the
    data's size (a registered shape), else None."""
    from lth_ray.lottery.datasets import SHAPES

    if d.name not in SHAPES:
        return None
    n = SHAPES.get(d.name)(d).train_pool - d.val_size
    return n if d.train_limit is None else min(n, d.train_limit)


def check_feasible(cfg: TrialConfig, file: str | None = None) -> None:
    from lth_ray.lottery.datasets import SHAPES

    d = cfg.dataset
    shape = SHAPES.get(d.name)(d) if d.name in SHAPES else None
    n_train = None
    if shape is not None:
        pool_field = "dataset.synthetic_train" if d.name == "synthetic" else d.name
        if not d.val_size < shape.train_pool:
            raise ConfigError(
                file,
                "dataset.val_size",
                f"expected fewer than the {shape.train_pool} training examples of {pool_field},"
                f" got {d.val_size}",
            )
        n_train = train_size(d)
        if shape.num_classes < 2:
            raise ConfigError(
                file, "dataset.synthetic_classes", f"expected >= 2, got {shape.num_classes}"
            )
    input_shape = shape.input_shape if shape is not None else NOMINAL_SHAPE
    classes = shape.num_classes if shape is not None else 10
    try:
        model = _model(cfg.model, input_shape, classes)
    except ValueError as e:  # an input too small for the net with this padding
        if shape is None:
            return  # the real shape is checked when the data is read
        where = "dataset.synthetic_shape" if d.name == "synthetic" else "model.padding"
        raise ConfigError(file, where, f"{e} ({cfg.model.arch} on {d.name})") from None
    _check_width(cfg, input_shape, classes, file)
    _check_pruning(cfg, model, file)
    if n_train is not None:
        _check_lengths(cfg, n_train, file)
        from lth_ray.lottery.schedule import schedule_problem

        problem = schedule_problem(cfg, n_train)
        if problem:
            raise ConfigError(file, problem[0], problem[1])


def _check_lengths(cfg: TrialConfig, n_train: int, file: str | None) -> None:
    """Batches that exist, and validation points inside every round that trains."""
    from lth_ray.lottery.schedule import parse_steps, round_steps
    from lth_ray.lottery.train import batches_per_epoch, steps_to_iterations

    t = cfg.train
    if t.drop_last and t.batch_size > n_train:
        raise ConfigError(
            file,
            "train.drop_last",
            f"drops every batch: train.batch_size {t.batch_size} is larger than the {n_train}"
            " training examples, so no full batch is ever drawn",
        )
    per_epoch = batches_per_epoch(max(n_train, 1), t)
    every = steps_to_iterations(parse_steps(t.eval_every), per_epoch)
    rounds = [("round 0", round_steps(cfg, 0, n_train), t.initial)]
    if cfg.prune.rounds:
        rounds.append(("every later round", round_steps(cfg, 1, n_train), t.retrain))
    for which, steps, written in rounds:
        length = steps_to_iterations(steps, per_epoch)
        if 1 <= length < every:
            raise ConfigError(
                file,
                "train.eval_every",
                f"{t.eval_every!r} ({every} iterations) is longer than {which} ({written!r},"
                f" {length} iterations): no validation point falls inside it, so early stopping"
                " and the stability criterion see only its end",
            )


def _check_width(cfg: TrialConfig, input_shape, classes: int, file: str | None) -> None:
    """Every hidden layer keeps at least one unit at this width (no silent 1-unit layers)."""
    from lth_ray.lottery.models import weight_layers

    width = cfg.model.width
    if width == 1.0:
        return
    base = _model(dataclasses.replace(cfg.model, width=1.0), input_shape, classes)
    for li in weight_layers(base):
        units = li.module.weight.shape[0]
        if li.kind != "output" and math.floor(units * width + 0.5) < 1:
            raise ConfigError(
                file,
                "model.width",
                f"width {width:g} leaves layer {li.name} ({units} units at width 1) without a"
                f" unit: expected >= {0.5 / units:.3g}",
            )


def _check_pruning(cfg: TrialConfig, model, file: str | None) -> None:
    from lth_ray.lottery.models import weight_layers
    from lth_ray.lottery.pruning import (
        KINDS,
        layer_fractions,
        layer_keys,
        prunable_names,
        prune_count,
    )

    p = cfg.prune
    layers = weight_layers(model)
    known = list(dict.fromkeys(k for li in layers for k in layer_keys(li.name, li.kind)))
    known += list(KINDS)
    for i, e in enumerate(p.exclude):
        if e not in known:
            close = difflib.get_close_matches(e, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                file,
                f"prune.exclude[{i}]",
                f"{e!r} is no layer of {cfg.model.arch}{hint}; expected a kind ({', '.join(KINDS)})"
                f" or a layer name ({', '.join(li.name for li in layers)})",
            )
    names = prunable_names(model, p.exclude)  # every entry is known by now
    if not names:
        raise ConfigError(
            file, "prune.exclude", f"{p.exclude} excludes every layer: nothing left to prune"
        )
    present = {li.kind for li in layers}
    for kind in p.layer_fractions:
        if kind not in present:
            raise ConfigError(
                file,
                f"prune.layer_fractions.{kind}",
                f"{cfg.model.arch} has no {kind} layer (it has {', '.join(sorted(present))}):"
                " this fraction would never be used",
            )
    sizes = {li.name: li.module.weight.numel() for li in layers}
    if p.scope == "global":
        groups = {"all prunable layers": (sum(sizes[n] for n in names), p.fraction)}
    else:
        fractions = layer_fractions(model, names, p.fraction, p.layer_fractions)
        groups = {n: (sizes[n], fractions[n]) for n in names}
    if p.rounds and all(fraction == 0 for _, fraction in groups.values()):
        raise ConfigError(
            file,
            "prune.layer_fractions",
            f"every prunable layer's fraction is 0 ({p.layer_fractions}): none of the"
            f" {p.rounds} rounds would prune anything",
        )
    for where, (left, fraction) in groups.items():
        for r in range(1, p.rounds + 1):
            if fraction == 0:
                break
            removed = prune_count(left, fraction)
            left -= removed
            if left < 1:
                raise ConfigError(
                    file,
                    "prune.rounds",
                    f"{p.rounds} rounds at fraction {fraction:g} leave no weight in {where}"
                    f" after round {r}: expected at most {r - 1}",
                )
            if removed == 0 and fraction > 0:
                raise ConfigError(
                    file,
                    "prune.rounds",
                    f"round {r} of {p.rounds} would prune nothing in {where} ({left} weights left,"
                    f" fraction {fraction:g} of them rounds to 0): expected at most {r - 1}",
                )
