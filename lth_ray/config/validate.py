"""What values mean, beyond their types: ranges, step strings, cross-field rules, registry names.

Registry names are checked by the registries (`Registry.check`), which live with the models, datasets
and criteria; they are imported here, above them, so the specs below never import them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from lth_ray.config import sweep_checks
from lth_ray.config.errors import ConfigError
from lth_ray.config.feasible import check_feasible
from lth_ray.lottery.schedule import lr_schedule_problem, parse_steps, schedule_problem
from lth_ray.names import slug_problem
from lth_ray.specs import AblationSpec, DatasetSpec, ModelSpec, PruneSpec, TrainSpec, TrialConfig

CONTROL_KINDS = ("reinit", "random_mask")
LAYER_TYPES = ("conv", "fc", "output")


def _check(cond: bool, file: str | None, path: str, message: str) -> None:
    if not cond:
        raise ConfigError(file, path, message)


def _registered(registry, name: str, file: str | None, path: str) -> None:
    problem = registry.check(name)
    if problem:
        raise ConfigError(file, path, problem)


SEED_RANGE = (-(2**63), 2**63)  # what torch's generators take
MAX_COUNT = 2**31 - 1  # examples, batch sizes, classes: far above any machine's memory anyway
MAX_STEPS = 10**9  # epochs or iterations of one round
MAX_ROUNDS = 1000  # pruning rounds (0.8^1000 of the weights would be left)
MAX_SYNTHETIC_BYTES = 8 << 30  # generated images held in memory


def _check_limits(cfg: TrialConfig | AblationSpec, file: str | None) -> None:
    """Numbers the machine cannot hold, refused before anything uses them."""
    d, t, p = cfg.dataset, cfg.train, cfg.prune
    lo, hi = SEED_RANGE
    for path, v in (("seed", cfg.seed), ("dataset.split_seed", d.split_seed)):
        _check(lo <= v < hi, file, path, f"expected a seed in [-2^63, 2^63), got {v}")
    counts = {
        "dataset.val_size": d.val_size,
        "dataset.train_limit": d.train_limit or 0,
        "dataset.test_limit": d.test_limit or 0,
        "dataset.synthetic_train": d.synthetic_train,
        "dataset.synthetic_test": d.synthetic_test,
        "dataset.synthetic_classes": d.synthetic_classes,
        "train.batch_size": t.batch_size,
        "train.eval_batch_size": t.eval_batch_size,
    }
    for path, v in counts.items():
        _check(v <= MAX_COUNT, file, path, f"expected at most {MAX_COUNT:,}, got {v:,}")
    for i, v in enumerate(d.synthetic_shape):
        _check(v <= 65536, file, f"dataset.synthetic_shape[{i}]", f"expected <= 65536, got {v}")
    if d.name == "synthetic" and len(d.synthetic_shape) == 3:
        size = (d.synthetic_train + d.synthetic_test) * math.prod(d.synthetic_shape)
        _check(
            size <= MAX_SYNTHETIC_BYTES,
            file,
            "dataset.synthetic_train",
            f"{size / 2**30:,.1f} GiB of generated images: expected at most"
            f" {MAX_SYNTHETIC_BYTES >> 30} GiB",
        )
    for path, v in (
        ("train.initial", t.initial),
        ("train.retrain", t.retrain),
        ("train.eval_every", t.eval_every),
        ("prune.rewind", p.rewind),
    ):
        m = re.match(r"^\s*(\d+)", str(v))
        if m and len(m.group(1)) <= 30:
            n = int(m.group(1))
            _check(n <= MAX_STEPS, file, path, f"expected at most {MAX_STEPS:,} steps, got {v!r}")
        elif m:
            raise ConfigError(file, path, f"expected at most {MAX_STEPS:,} steps, got {v!r}")
    _check(
        p.rounds <= MAX_ROUNDS, file, "prune.rounds", f"expected <= {MAX_ROUNDS}, got {p.rounds}"
    )


def validate_trial(cfg: TrialConfig | AblationSpec, file: str | None = None) -> None:
    """The trial's fields (of a TrialConfig, or of an ablation's base trial), section by section,
    then what needs the model and the data's shape (`feasible`)."""
    _check_limits(cfg, file)
    _check_dataset(cfg.dataset, file)
    _check_model(cfg.model, file)
    _check_train(cfg.train, file)
    _check_prune(cfg.prune, file)
    problem = schedule_problem(cfg)  # type: ignore[arg-type]  (an ablation's base trial too)
    if problem:
        raise ConfigError(file, *problem)
    _check_eval_every(cfg.train, file)
    _check_lr_schedule(cfg.train, file)
    _check_augment(cfg.dataset, file)
    _check_data_source(cfg.dataset, file)
    p = cfg.prune
    for kind in p.layer_fractions:
        _check(
            kind not in p.exclude,
            file,
            f"prune.layer_fractions.{kind}",
            f"the {kind} layers are excluded (prune.exclude), so this fraction is never used",
        )
    check_feasible(cfg, file)


def _check_dataset(d: DatasetSpec, file: str | None) -> None:
    from lth_ray.lottery.data import DATASETS

    _registered(DATASETS, d.name, file, "dataset.name")
    _check(d.val_size >= 1, file, "dataset.val_size", f"expected >= 1, got {d.val_size}")
    _check(
        len(d.synthetic_shape) == 3 and min(d.synthetic_shape) >= 1,
        file,
        "dataset.synthetic_shape",
        f"expected [C, H, W] of positive integers, got {d.synthetic_shape}",
    )
    for lim in ("train_limit", "test_limit"):
        v = getattr(d, lim)
        _check(v is None or v >= 1, file, f"dataset.{lim}", f"expected null or >= 1, got {v}")


def _check_model(m: ModelSpec, file: str | None) -> None:
    from lth_ray.lottery.models import MODELS

    _registered(MODELS, m.arch, file, "model.arch")
    _check(m.width > 0, file, "model.width", f"expected > 0, got {m.width}")


def _check_train(t: TrainSpec, file: str | None) -> None:
    _check(t.lr > 0, file, "train.lr", f"expected > 0, got {t.lr}")
    _check(t.eps > 0, file, "train.eps", f"expected > 0, got {t.eps}")
    _check(
        len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
        file,
        "train.betas",
        f"expected two numbers in [0, 1), got {t.betas}",
    )
    _check(0 <= t.momentum < 1, file, "train.momentum", f"expected [0, 1), got {t.momentum}")
    _check(t.weight_decay >= 0, file, "train.weight_decay", f"expected >= 0, got {t.weight_decay}")
    _check(t.batch_size >= 1, file, "train.batch_size", f"expected >= 1, got {t.batch_size}")
    _check(
        t.eval_batch_size >= 1,
        file,
        "train.eval_batch_size",
        f"expected >= 1, got {t.eval_batch_size}",
    )
    for key in ("initial", "retrain"):
        try:
            n, _ = parse_steps(getattr(t, key))
        except ValueError as e:
            raise ConfigError(file, f"train.{key}", str(e)) from None
        _check(n >= 1, file, f"train.{key}", f"expected at least 1 step, got {getattr(t, key)!r}")


def _check_prune(p: PruneSpec, file: str | None) -> None:
    from lth_ray.lottery.pruning import CRITERIA

    _registered(CRITERIA, p.criterion, file, "prune.criterion")
    _check(
        0 < p.fraction < 1,
        file,
        "prune.fraction",
        f"expected a fraction in (0, 1), got {p.fraction}",
    )
    _check(p.rounds >= 0, file, "prune.rounds", f"expected >= 0, got {p.rounds}")
    for key, v in p.layer_fractions.items():
        _check(
            key in LAYER_TYPES,
            file,
            f"prune.layer_fractions.{key}",
            "expected a layer type: conv, fc or output",
        )
        _check(
            0 <= v < 1,
            file,
            f"prune.layer_fractions.{key}",
            f"expected a fraction in [0, 1), got {v}",
        )
    _check(
        not p.layer_fractions or p.scope == "layerwise",
        file,
        "prune.layer_fractions",
        "per-layer-type fractions need prune.scope: layerwise (a global threshold ignores them)",
    )
    _check(
        p.control_index >= 0, file, "prune.control_index", f"expected >= 0, got {p.control_index}"
    )


def _check_eval_every(t: TrainSpec, file: str | None) -> None:
    try:
        n, _ = parse_steps(t.eval_every)
    except ValueError as e:
        raise ConfigError(file, "train.eval_every", str(e)) from None
    _check(n >= 1, file, "train.eval_every", f"expected at least 1 step, got {t.eval_every!r}")


def _check_lr_schedule(t: TrainSpec, file: str | None) -> None:
    problem = lr_schedule_problem(t)
    if problem:
        raise ConfigError(file, *problem)


def _check_augment(d: DatasetSpec, file: str | None) -> None:
    from lth_ray.lottery.augment import KINDS

    _check(
        isinstance(d.augment, list),
        file,
        "dataset.augment",
        f"expected a list of {' | '.join(KINDS)}, got {d.augment!r}",
    )
    for i, kind in enumerate(d.augment):
        _check(
            kind in KINDS,
            file,
            f"dataset.augment[{i}]",
            f"expected an augmentation: {' | '.join(KINDS)}, got {kind!r}",
        )
    _check(
        len(set(d.augment)) == len(d.augment),
        file,
        "dataset.augment",
        f"each augmentation at most once, got {d.augment}",
    )


def _check_data_source(d: DatasetSpec, file: str | None) -> None:
    for key in ("synthetic_train", "synthetic_test"):
        v = getattr(d, key)
        _check(v >= 1, file, f"dataset.{key}", f"expected >= 1, got {v}")
    _check(
        d.synthetic_classes >= 2,
        file,
        "dataset.synthetic_classes",
        f"expected >= 2 classes, got {d.synthetic_classes}",
    )
    from lth_ray.lottery.data import DATASETS

    # readers of files under dataset.root carry their sources (`datasets.base.cached`); generated
    # data (synthetic, a plugin's in-memory sets) needs no root
    if hasattr(DATASETS.get(d.name), "sources") and not d.download:
        root = Path(d.root).expanduser()
        _check(
            root.exists(),
            file,
            "dataset.root",
            f"'{root}' does not exist (and dataset.download is false): point --data-root at the"
            " data, or set dataset.download: true",
        )


def validate_sweep(spec: AblationSpec, file: str | None = None) -> None:
    """The sweep's own sections: controls, resources, Tune settings, the name."""
    from lth_ray.lottery.pruning import CRITERIA

    for kind, n in spec.controls.kinds.items():
        _check(
            kind in CONTROL_KINDS,
            file,
            f"controls.{kind}",
            f"expected a control kind: {' | '.join(CONTROL_KINDS)}",
        )
        _check(n >= 1, file, f"controls.{kind}", f"expected a count >= 1, got {n}")
    for i, c in enumerate(spec.controls.criteria):
        _registered(CRITERIA, c, file, f"controls.criteria[{i}]")
    _check(spec.resources.cpu > 0, file, "resources.cpu", f"expected > 0, got {spec.resources.cpu}")
    gpu = spec.resources.gpu
    _check(gpu >= 0, file, "resources.gpu", f"expected >= 0, got {gpu}")
    _check(
        gpu <= 1 or gpu == int(gpu),
        file,
        "resources.gpu",
        f"expected a fraction up to 1 or a whole number of GPUs, got {gpu:g}",
    )
    _check(
        spec.tune.max_concurrent >= 0,
        file,
        "tune.max_concurrent",
        f"expected >= 0, got {spec.tune.max_concurrent}",
    )
    _check(
        spec.tune.max_failures >= 0,
        file,
        "tune.max_failures",
        f"expected >= 0, got {spec.tune.max_failures}",
    )
    _check(
        spec.tune.level_wait_s >= 0,
        file,
        "tune.level_wait_s",
        f"expected >= 0 seconds, got {spec.tune.level_wait_s}",
    )
    _check_instability(spec, file)
    _check(
        spec.tune.max_trials >= 1,
        file,
        "tune.max_trials",
        f"expected >= 1, got {spec.tune.max_trials}",
    )
    sweep_checks.check_arms(spec, file)
    problem = slug_problem(spec.name)  # it names the storage and report folders
    _check(problem is None, file, "name", str(problem))


def _check_instability(spec: AblationSpec, file: str | None) -> None:
    """analysis.instability: rewind points inside the rounds they branch from, levels the tickets
    have, sizes that make a path."""
    a, where = spec.analysis.instability, "analysis.instability"
    if not a.at:
        _check(
            a.levels == [0] or not a.levels,
            file,
            f"{where}.at",
            "give the rewind points k the levels are analysed at",
        )
        return
    first, retrain = parse_steps(spec.train.initial), parse_steps(spec.train.retrain)
    levels_ok = all(isinstance(r, int) and r >= 0 for r in a.levels)
    for i, k in enumerate(a.at):
        try:
            n, unit = parse_steps(k)
        except ValueError as e:
            raise ConfigError(file, f"{where}.at[{i}]", str(e)) from None
        _check(
            unit != first[1] or n < first[0],
            file,
            f"{where}.at[{i}]",
            f"{k!r} leaves no training in round 0 (train.initial {spec.train.initial!r})",
        )
        _check(
            not levels_ok or max(a.levels, default=0) == 0 or unit != retrain[1] or n < retrain[0],
            file,
            f"{where}.at[{i}]",
            f"{k!r} leaves no training in a pruned round (train.retrain {spec.train.retrain!r})",
        )
    _check(len(set(a.at)) == len(a.at), file, f"{where}.at", f"repeated rewind points in {a.at}")
    _check(bool(a.levels), file, f"{where}.levels", "expected at least one level (0 = dense)")
    rounds = max([spec.prune.rounds, *map(int, spec.grid.get("prune.rounds", []))])
    for i, r in enumerate(a.levels):
        _check(
            isinstance(r, int) and 0 <= r <= rounds,
            file,
            f"{where}.levels[{i}]",
            f"expected a level from 0 (dense) to prune.rounds ({rounds}), got {r!r}",
        )
    _check(len(set(a.levels)) == len(a.levels), file, f"{where}.levels", f"repeated in {a.levels}")
    schedules = {spec.prune.schedule, *spec.grid.get("prune.schedule", [])}
    _check(
        max(a.levels) == 0 or "iterative" in schedules,
        file,
        f"{where}.levels",
        "levels past 0 take their masks from iterative tickets, and the sweep has none",
    )
    _check(a.pairs >= 1, file, f"{where}.pairs", f"expected >= 1, got {a.pairs}")
    _check(a.points >= 2, file, f"{where}.points", f"expected >= 2 (both ends), got {a.points}")
    _check(
        0 < a.threshold < 1,
        file,
        f"{where}.threshold",
        f"expected an error difference in (0, 1) (0.02 = 2 points), got {a.threshold}",
    )
    _check(
        a.train_subset >= 1, file, f"{where}.train_subset", f"expected >= 1, got {a.train_subset}"
    )
