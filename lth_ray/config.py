"""Typed ablation specs, loaded from YAML and validated before anything runs.

An ablation file holds one base trial (``seed``, ``dataset``, ``model``, ``train``, ``prune``) plus the
sweep's ``grid``, ``baselines``, ``resources`` and ``tune`` sections. Every error names the file, the
dotted field and what was expected, so a typo fails in the driver and never inside a trial.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A bad ablation: says which file, which field and what was expected."""

    def __init__(self, file: str | None, field_path: str, message: str) -> None:
        self.file, self.field, self.message = file, field_path, message
        where = f"{file}: " if file else ""
        super().__init__(f"{where}field '{field_path}': {message}")


def doc(default: Any, text: str) -> Any:
    """A dataclass field with a one-line description (shown by `lth_ray.trial --help-config`)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


# ----------------------------------------------------------------------------------------------
# The trial: what one lottery-ticket run needs.


@dataclass
class DatasetSpec:
    name: str = doc(
        "cifar10",
        "dataset registry key: cifar10 | image_folder | fashion_mnist | mnist | synthetic",
    )
    root: str = doc(
        "data", "folder with the dataset files (for image_folder also a .tar.xz archive)"
    )
    download: bool = doc(False, "let torchvision download the dataset when it is missing")
    val_size: int = doc(
        5000, "examples held out of the training set for validation / early stopping"
    )
    split_seed: int = doc(0, "seed of the train/val split; independent of the model seed")
    scale: Literal["unit", "standardize"] = doc(
        "unit",
        "pixel scaling: unit = x/255 in [0,1] (the study); standardize = per-channel z-score",
    )
    train_limit: int | None = doc(
        None, "keep only this many training examples after the split (quick runs)"
    )
    test_limit: int | None = doc(None, "keep only this many test examples (quick runs)")
    cache_dir: str | None = doc(
        None, "where decoded tensors are cached (default: <root>/.lth_cache)"
    )
    synthetic_train: int = doc(1200, "synthetic only: number of train+val examples generated")
    synthetic_test: int = doc(400, "synthetic only: number of test examples generated")
    synthetic_shape: list[int] = doc([3, 16, 16], "synthetic only: image shape C,H,W")
    synthetic_classes: int = doc(10, "synthetic only: number of classes")


@dataclass
class ModelSpec:
    arch: str = doc("conv4", "model registry key: conv2 | conv4 | conv6 | lenet300_100 | ...")
    padding: Literal["same", "valid"] = doc(
        "same", "conv padding: 'same' (Frankle & Carbin) or 'valid' (Keras default)"
    )
    init: Literal["glorot_uniform", "glorot_normal", "kaiming_normal", "kaiming_uniform"] = doc(
        "glorot_normal", "initialiser of weights (biases start at zero)"
    )
    width: float = doc(1.0, "multiplier on every hidden layer's width (1.0 = the published net)")


@dataclass
class TrainSpec:
    optimizer: Literal["adam", "sgd"] = doc("adam", "optimizer")
    lr: float = doc(3e-4, "learning rate")
    eps: float = doc(
        1e-7, "Adam epsilon (1e-7 = Keras default, used by the study; torch's is 1e-8)"
    )
    betas: list[float] = doc([0.9, 0.999], "Adam betas")
    momentum: float = doc(0.9, "SGD momentum")
    weight_decay: float = doc(0.0, "L2 weight decay")
    batch_size: int = doc(60, "training batch size")
    eval_batch_size: int = doc(1000, "batch size for validation/test evaluation")
    initial: str = doc(
        "26ep", "training length of round 0 (dense): '<n>ep' epochs or '<n>it' iterations"
    )
    retrain: str = doc("25ep", "training length of every later round: '<n>ep' or '<n>it'")
    precision: Literal["auto", "fp32", "tf32", "bf16"] = doc(
        "auto",
        "arithmetic precision of training: auto = bf16 on CUDA (within fp32's seed spread in the"
        " precision study), fp32 elsewhere; bf16 = autocast with fp32 master weights",
    )
    device: Literal["auto", "cpu", "cuda"] = doc(
        "auto", "where to train: auto = cuda when visible, else cpu"
    )
    fast_path: Literal["auto", "off"] = doc(
        "auto", "on CUDA, capture the training step in a CUDA graph (auto) or run eagerly (off)"
    )
    drop_last: bool = doc(False, "drop the last partial batch of an epoch (static shapes)")


@dataclass
class PruneSpec:
    criterion: str = doc(
        "magnitude",
        "criterion registry key: stability | magnitude | movement | large_init_large_final | random",
    )
    fraction: float = doc(0.2, "fraction of the active prunable weights removed per round")
    scope: Literal["global", "layerwise"] = doc(
        "global", "one threshold over all prunable layers, or one per layer"
    )
    layer_fractions: dict[str, float] = doc(
        {},
        "layerwise only: fraction per layer type (conv, fc, output); missing types use 'fraction'",
    )
    exclude: list[str] = doc(
        ["output"], "layers never pruned: layer names or types (conv, fc, output)"
    )
    rounds: int = doc(15, "pruning rounds after the dense round 0")
    schedule: Literal["iterative", "one_shot"] = doc(
        "iterative",
        "iterative: prune the retrained net each round; one_shot: prune the dense net to each level",
    )
    rewind: str = doc(
        "init", "where survivors restart: 'init' (theta_0), '<k>ep' or '<k>it' (late rewinding)"
    )
    control: Literal["none", "reinit"] = doc(
        "none", "reinit: train the ticket's mask from a fresh random init (control)"
    )
    reinit_seed_offset: int = doc(
        10_000, "reinit control: the fresh init uses seed + this offset + round"
    )


@dataclass
class TrialConfig:
    """Everything one trial needs; plain and serialisable so Ray can ship it."""

    name: str = doc("trial", "ablation name (experiment name in MLflow)")
    seed: int = doc(0, "model seed: initialisation, data order, random criterion")
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], file: str | None = None) -> TrialConfig:
        cfg = _build(cls, data, "", file)
        validate_trial(cfg, file)
        return cfg


# ----------------------------------------------------------------------------------------------
# The sweep: how the base trial is expanded and scheduled.


@dataclass
class GridSpec:
    criteria: list[str] = doc([], "criteria to compare (empty = the base trial's prune.criterion)")
    seeds: list[int] = doc([], "model seeds (empty = the base trial's seed)")
    prune_rates: list[float] = doc(
        [], "fractions pruned per round (empty = the base trial's prune.fraction)"
    )


@dataclass
class BaselinesSpec:
    one_shot: bool = doc(
        False, "add a one-shot trial for every criterion x seed x rate of the grid"
    )
    reinit: list[str] = doc([], "criteria that get random-reinit controls (per seed x rate)")


@dataclass
class ResourcesSpec:
    cpu: float = doc(1.0, "CPUs per trial")
    gpu: float = doc(0.0, "GPUs per trial; fractions (e.g. 0.125) pack several trials onto one GPU")
    gpu_fallback: Literal["cpu", "error"] = doc(
        "cpu",
        "when gpu > 0 but the cluster has no GPU: run on CPU, or fail before any trial starts",
    )


@dataclass
class TuneSpec:
    max_concurrent: int = doc(0, "cap on trials running at once (0 = as many as resources allow)")
    max_failures: int = doc(
        3, "retries of a trial that dies (it resumes from its last finished round)"
    )
    reuse_actors: bool = doc(True, "reuse Ray actors between trials (much faster for small trials)")


@dataclass
class AblationSpec:
    name: str = doc("ablation", "ablation name: MLflow experiment and storage folder")
    description: str = doc("", "free text shown in the MLflow parent run")
    seed: int = doc(0, "base model seed")
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)
    grid: GridSpec = field(default_factory=GridSpec)
    baselines: BaselinesSpec = field(default_factory=BaselinesSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    tune: TuneSpec = field(default_factory=TuneSpec)

    def base_trial(self) -> TrialConfig:
        return TrialConfig(
            name=self.name,
            seed=self.seed,
            dataset=copy.deepcopy(self.dataset),
            model=copy.deepcopy(self.model),
            train=copy.deepcopy(self.train),
            prune=copy.deepcopy(self.prune),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# Loading and validation.

_STEPS = re.compile(r"^(\d+)(ep|it)$")


def parse_steps(value: str) -> tuple[int, str]:
    """'26ep' -> (26, 'ep'); '25000it' -> (25000, 'it')."""
    m = _STEPS.match(str(value).strip())
    if not m:
        raise ValueError(f"expected '<n>ep' or '<n>it', got {value!r}")
    return int(m.group(1)), m.group(2)


def parse_rewind(value: str) -> tuple[int, str] | None:
    """'init' -> None; '2ep' / '500it' -> (k, unit)."""
    if str(value).strip() == "init":
        return None
    return parse_steps(value)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, path: str, file: str | None) -> Any:
    origin = typing.get_origin(tp)
    expected = _type_name(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(file, path, f"expected one of {expected}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path, file)
            except ConfigError:
                continue
        raise ConfigError(file, path, f"expected {expected}, got {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(file, path, f"expected {expected}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{path}[{i}]", file) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, path, f"expected {expected}, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): _coerce(item, v, f"{path}.{k}", file) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(
                file, path, f"expected a mapping of {tp.__name__} fields, got {value!r}"
            )
        return _build(tp, value, path, file)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(file, path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(file, path, f"expected a string, got {value!r}")
        return str(value)
    raise ConfigError(file, path, f"unsupported field type {tp!r}")


def _build(cls: type, data: dict[str, Any], prefix: str, file: str | None) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                file, path, f"unknown field{hint}; expected one of: {', '.join(names)}"
            )
        kwargs[key] = _coerce(hints[key], value, path, file)
    return cls(**kwargs)


def _check(cond: bool, file: str | None, path: str, message: str) -> None:
    if not cond:
        raise ConfigError(file, path, message)


def validate_trial(cfg: TrialConfig | AblationSpec, file: str | None = None) -> None:
    """Semantic checks beyond types: ranges, registry names, step strings."""
    from lth_ray.data import DATASETS
    from lth_ray.models import MODELS
    from lth_ray.pruning import CRITERIA

    d, m, t, p = cfg.dataset, cfg.model, cfg.train, cfg.prune
    _check(
        d.name in DATASETS,
        file,
        "dataset.name",
        f"expected one of {DATASETS.names()}, got {d.name!r}",
    )
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
    _check(
        m.arch in MODELS, file, "model.arch", f"expected one of {MODELS.names()}, got {m.arch!r}"
    )
    _check(m.width > 0, file, "model.width", f"expected > 0, got {m.width}")
    _check(t.lr > 0, file, "train.lr", f"expected > 0, got {t.lr}")
    _check(t.eps > 0, file, "train.eps", f"expected > 0, got {t.eps}")
    _check(
        len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
        file,
        "train.betas",
        f"expected two numbers in [0, 1), got {t.betas}",
    )
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
    _check(
        p.criterion in CRITERIA,
        file,
        "prune.criterion",
        f"expected one of {CRITERIA.names()}, got {p.criterion!r}",
    )
    _check(
        0 < p.fraction < 1,
        file,
        "prune.fraction",
        f"expected a fraction in (0, 1), got {p.fraction}",
    )
    _check(p.rounds >= 0, file, "prune.rounds", f"expected >= 0, got {p.rounds}")
    for key, v in p.layer_fractions.items():
        _check(
            key in ("conv", "fc", "output"),
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
    try:
        rw = parse_rewind(p.rewind)
    except ValueError as e:
        raise ConfigError(
            file, "prune.rewind", f"expected 'init', '<k>ep' or '<k>it': {e}"
        ) from None
    if rw is not None:
        first, unit = parse_steps(t.initial)
        if unit == rw[1]:
            _check(
                rw[0] <= first,
                file,
                "prune.rewind",
                f"rewind point {p.rewind!r} lies beyond round 0's training ({t.initial!r})",
            )


def _apply_override(data: dict[str, Any], assignment: str, file: str | None) -> None:
    if "=" not in assignment:
        raise ConfigError(file, assignment, "a --set override must look like key.path=value")
    key, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(file, key, "cannot set a sub-field of a non-mapping value")
    node[parts[-1]] = value


def load_ablation(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> AblationSpec:
    """Read, override (`--set a.b=v`), type-check and validate an ablation file."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise ConfigError(file, "<file>", "ablation file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(file, "<file>", f"not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(file, "<file>", "expected a mapping at the top level")
    for assignment in overrides:
        _apply_override(data, assignment, file)
    spec = _build(AblationSpec, data, "", file)
    validate_ablation(spec, file)
    return spec


def validate_ablation(spec: AblationSpec, file: str | None = None) -> None:
    from lth_ray.pruning import CRITERIA

    validate_trial(spec, file)
    for i, c in enumerate(spec.grid.criteria):
        _check(
            c in CRITERIA,
            file,
            f"grid.criteria[{i}]",
            f"expected one of {CRITERIA.names()}, got {c!r}",
        )
    for i, r in enumerate(spec.grid.prune_rates):
        _check(0 < r < 1, file, f"grid.prune_rates[{i}]", f"expected a fraction in (0, 1), got {r}")
    _check(
        len(set(spec.grid.seeds)) == len(spec.grid.seeds),
        file,
        "grid.seeds",
        "expected distinct seeds",
    )
    for i, c in enumerate(spec.baselines.reinit):
        _check(
            c in CRITERIA,
            file,
            f"baselines.reinit[{i}]",
            f"expected one of {CRITERIA.names()}, got {c!r}",
        )
    _check(spec.resources.cpu > 0, file, "resources.cpu", f"expected > 0, got {spec.resources.cpu}")
    _check(
        spec.resources.gpu >= 0, file, "resources.gpu", f"expected >= 0, got {spec.resources.gpu}"
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
        bool(re.match(r"^[A-Za-z0-9_.-]+$", spec.name)),
        file,
        "name",
        f"expected letters, digits, '_', '-', '.', got {spec.name!r}",
    )


def expand_trials(spec: AblationSpec) -> list[TrialConfig]:
    """The ablation's trials: criteria x seeds x rates (iterative), then one-shot and reinit baselines."""
    base = spec.base_trial()
    criteria = spec.grid.criteria or [base.prune.criterion]
    seeds = spec.grid.seeds or [base.seed]
    rates = spec.grid.prune_rates or [base.prune.fraction]

    def make(criterion: str, seed: int, rate: float, schedule: str, control: str) -> TrialConfig:
        t = copy.deepcopy(base)
        t.seed, t.prune.criterion, t.prune.fraction = seed, criterion, rate
        t.prune.schedule, t.prune.control = schedule, control  # type: ignore[assignment]
        return t

    trials = [
        make(c, s, r, base.prune.schedule, base.prune.control)
        for c in criteria
        for s in seeds
        for r in rates
    ]
    if spec.baselines.one_shot:
        trials += [
            make(c, s, r, "one_shot", "none") for c in criteria for s in seeds for r in rates
        ]
    trials += [
        make(c, s, r, base.prune.schedule, "reinit")
        for c in spec.baselines.reinit
        for s in seeds
        for r in rates
    ]
    seen, unique = set(), []
    for t in trials:
        key = (t.prune.criterion, t.seed, t.prune.fraction, t.prune.schedule, t.prune.control)
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return unique


def trial_key(t: TrialConfig) -> str:
    """A short stable name for a trial, e.g. 'stability-s0-p0.1-iterative-none'."""
    return (
        f"{t.prune.criterion}-s{t.seed}-p{t.prune.fraction:g}-{t.prune.schedule}-{t.prune.control}"
    )


def field_docs(cls: type = AblationSpec, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted field, default, one-line doc) for every field; used by --help-config and the README."""
    rows = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            rows += field_docs(tp, path + ".")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((path, repr(default), f.metadata.get("doc", "")))
    return rows
