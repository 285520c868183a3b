"""The typed specs of an ablation: plain dataclasses with a one-line doc per field.

The bottom layer of the configuration: no imports from the rest of the package, so models, data and
training can import their specs. Loading, validation and grid expansion live above (`lth_ray.config`).
An ablation file holds one base trial (``seed``, ``dataset``, ``model``, ``train``, ``prune``) plus the
sweep's ``grid``, ``baselines``, ``controls``, ``resources``, ``tune`` and ``analysis`` sections.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


def doc(default: Any, text: str) -> Any:
    """A dataclass field with a one-line description (shown by `--help-config`)."""
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
    verify_checksums: bool = doc(
        True,
        "cifar10: check each python-pickle batch against torchvision's md5 list before reading it;"
        " false only for batches you made yourself (they are still read without running code)",
    )
    val_size: int = doc(
        5000, "examples held out of the training set for validation / early stopping"
    )
    split_seed: int = doc(0, "seed of the train/val split; independent of the model seed")
    scale: Literal["unit", "standardize", "imagenet"] = doc(
        "unit",
        "pixel scaling: unit = x/255 in [0,1] (the study); standardize = per-channel z-score with"
        " the training split's own mean and std; imagenet = (x/255 - [0.485, 0.456, 0.406]) /"
        " [0.229, 0.224, 0.225], the ImageNet statistics open_lth's CIFAR-10 normalises with",
    )
    train_limit: int | None = doc(
        None, "keep only this many training examples after the split (quick runs)"
    )
    test_limit: int | None = doc(None, "keep only this many test examples (quick runs)")
    cache_dir: str | None = doc(
        None, "where decoded tensors are cached (default: <root>/.lth_cache)"
    )
    augment: list[str] = doc(
        [],
        "training-time augmentation, drawn per example per epoch on the device: crop = a random"
        " crop of the image zero-padded by 4 pixels (offsets -4..+4), flip = horizontal flip with"
        " probability 1/2 (open_lth's CIFAR-10 augmentation is [crop, flip])",
    )
    synthetic_train: int = doc(1200, "synthetic only: number of train+val examples generated")
    synthetic_test: int = doc(400, "synthetic only: number of test examples generated")
    synthetic_shape: list[int] = doc([3, 16, 16], "synthetic only: image shape C,H,W")
    synthetic_classes: int = doc(10, "synthetic only: number of classes")


@dataclass
class ModelSpec:
    arch: str = doc(
        "conv4",
        "model registry key: conv2 | conv4 | conv6 | lenet300_100 | cifar_resnet_<20|32|44|56|110>"
        " | cifar_vgg_<11|13|16|19> | ...",
    )
    padding: Literal["same", "valid"] = doc(
        "same", "conv padding: 'same' (Frankle & Carbin) or 'valid' (Keras default)"
    )
    init: Literal["glorot_uniform", "glorot_normal", "kaiming_normal", "kaiming_uniform"] = doc(
        "glorot_normal", "initialiser of weights (biases start at zero)"
    )
    width: float = doc(1.0, "multiplier on every hidden layer's width (1.0 = the published net)")
    bias_init: Literal["zero", "torch"] = doc(
        "zero",
        "biases of conv/linear layers: zero, or torch = the layer's own default (uniform in"
        " +-1/sqrt(fan_in), what open_lth leaves them at)",
    )
    bn_init: Literal["uniform", "fixed"] = doc(
        "uniform",
        "BatchNorm scale at init (shift 0): uniform = U(0, 1) (open_lth's default batchnorm_init),"
        " fixed = 1 (torch's default)",
    )


@dataclass
class TrainSpec:
    optimizer: Literal["adam", "sgd"] = doc("adam", "optimizer")
    lr: float = doc(3e-4, "learning rate")
    eps: float = doc(
        1e-7, "Adam epsilon (1e-7 = Keras default, used by the study; torch's is 1e-8)"
    )
    eps_style: Literal["torch", "keras"] = doc(
        "torch",
        "where Adam's epsilon enters: torch = sqrt(v_hat) + eps; keras = Kingma & Ba's epsilon hat,"
        " lr_t * m / (sqrt(v) + eps) as Keras and TF1 (the study, Frankle & Carbin) apply it",
    )
    betas: list[float] = doc([0.9, 0.999], "Adam betas")
    momentum: float = doc(0.9, "SGD momentum")
    nesterov: bool = doc(False, "SGD with Nesterov momentum")
    weight_decay: float = doc(
        0.0,
        "L2 weight decay, coupled (added to the gradient, as torch.optim.SGD and Adam apply it)",
    )
    warmup: str = doc(
        "0it",
        "linear learning-rate warmup, '<n>it' or '<n>ep': lr x min(1, step / n) (open_lth's rule;"
        " SGD only)",
    )
    milestones: list[str] = doc(
        [],
        "step decay: the learning rate is multiplied by train.gamma at each of these steps"
        " ('80ep', '32000it'; SGD only)",
    )
    gamma: float = doc(0.1, "the factor of each step decay at train.milestones")
    lr_schedule: Literal["step", "cosine"] = doc(
        "step",
        "step = constant between milestones; cosine = lr x (1 + cos(pi t / T)) / 2 after warmup,"
        " T the round's full length (milestones then not allowed; SGD only)",
    )
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
    eval_every: str = doc(
        "1ep",
        "validation interval, '<n>ep' or '<n>it' (Frankle & Carbin: 100it): the early-stop point"
        " and the best weights are taken at this resolution; the end of training is always evaluated",
    )
    deterministic: bool = doc(
        False,
        "on CUDA, deterministic cuDNN/cuBLAS kernels (bit-identical resumes and reruns, slower);"
        " CPU runs are deterministic either way",
    )


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
    rewind_budget: Literal["remaining", "full"] = doc(
        "remaining",
        "after rewinding to step k, train the round's remaining T - k steps (the papers, open_lth)"
        " or a full T steps",
    )
    retrain_mode: Literal["weight_rewind", "lr_rewind", "finetune"] = doc(
        "weight_rewind",
        "what each pruned round retrains (Renda et al. 2020): weight_rewind = weights and schedule"
        " back to the rewind point k; lr_rewind = keep the final weights, run the schedule again"
        " from k; finetune = keep the final weights, train at the schedule's final learning rate",
    )
    control: Literal["none", "reinit", "random_mask"] = doc(
        "none",
        "control arm: reinit = the ticket's mask from a fresh random init; random_mask = a random"
        " mask with the ticket's per-layer sparsity, from the ticket's start weights",
    )
    control_index: int = doc(
        0, "which of a ticket's repeated controls this is (each draws its own seed)"
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

    key: str = doc(
        "", "the trial's name in its sweep (set by the grid: every field that varies, and the arm)"
    )
    axes: dict[str, str] = doc(
        {}, "the sweep's varying fields and this trial's value of each (set by the grid; tags)"
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# The sweep: how the base trial is expanded and scheduled.


@dataclass
class BaselinesSpec:
    one_shot: bool = doc(
        False, "add a one-shot trial (prune the dense net straight to each level) per grid point"
    )


@dataclass
class ControlsSpec:
    kinds: dict[str, int] = doc(
        {},
        "control arms per ticket: reinit | random_mask -> how many (each from its own seed);"
        " `controls: [reinit, random_mask]` means one of each",
    )
    criteria: list[str] = doc(
        [], "criteria whose tickets get the controls (empty = every criterion of the sweep)"
    )


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
    max_trials: int = doc(
        10_000,
        "refuse a sweep of more trials than this (counted before any is built; --max-trials)",
    )
    level_wait_s: float = doc(
        30.0,
        "seconds a control that caught up with its ticket waits for the next level before it"
        " gives its slot back (the searcher starts it again once the level exists)",
    )
    branch_from: Literal["level", "whole"] = doc(
        "level",
        "when a control starts: 'level' trains its level r once its ticket's level r exists (one"
        " level behind); 'whole' waits until the ticket has finished every level (same numbers)",
    )


@dataclass
class InstabilitySpec:
    at: list[str] = doc(
        [], "rewind points k (step strings, '0it', '500it', '1ep'); none: no instability analysis"
    )
    levels: list[int] = doc([0], "0 = the dense net; r = the ticket's level-r mask applied to W_k")
    pairs: int = doc(1, "noise pairs (two copies each) per (seed, k, level)")
    points: int = doc(30, "evenly spaced alphas in [0, 1] on the linear path between the copies")
    threshold: float = doc(
        0.02, "stable when the instability is below this (errors are fractions: 0.02 = 2 points)"
    )
    batchnorm: Literal["recompute", "interpolate"] = doc(
        "recompute",
        "BatchNorm statistics along the path: recomputed on fixed training batches at each alpha,"
        " or interpolated with the parameters",
    )
    train_subset: int = doc(
        10000, "the first n training examples the training error is measured on"
    )


@dataclass
class AnalysisSpec:
    instability: InstabilitySpec = field(default_factory=InstabilitySpec)


@dataclass
class AblationSpec:
    name: str = doc("ablation", "ablation name: MLflow experiment and storage folder")
    description: str = doc("", "free text shown in the MLflow parent run")
    plugins: list[str] = doc(
        [],
        "modules or .py files (relative to the ablation's folder) that register models, datasets"
        " or criteria; imported before validation and in every Ray worker",
    )
    seed: int = doc(0, "base model seed")
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)
    grid: dict[str, list[Any]] = doc(
        {},
        "axes of the sweep: a dotted field -> its values (`prune.rewind: [init, 1ep]`), or a named"
        " bundle -> mappings of fields that move together; the sweep is their product",
    )
    baselines: BaselinesSpec = field(default_factory=BaselinesSpec)
    controls: ControlsSpec = field(default_factory=ControlsSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    tune: TuneSpec = field(default_factory=TuneSpec)
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)

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


# Fields the grid sets itself, never axes: the ablation's name and the trial's place in its sweep.
NOT_AXES = ("name", "key", "axes", "prune.control_index")


def axis_paths() -> list[str]:
    """Every dotted trial field a grid axis may vary (what `--help-config` lists for the trial)."""
    return [p for p, _, _ in field_docs(TrialConfig) if p not in NOT_AXES]
