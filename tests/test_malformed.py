"""A corpus of malformed ablation files, as a new user might write them.

Every case is `ablations/smoke.yaml` (a valid, tiny synthetic ablation) with one thing wrong, or a
whole file that is no ablation at all. Each must fail at `python -m lth_ray.sweep FILE --dry-run`
with exit code 2, no traceback, and a message on stderr that names the file and the offending field
(a dotted path such as `train.lr` or `grid.prune.rewind`, `<file>` for a whole-file problem).
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lth_ray.sweep import cli as sweep

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TEXT = (ROOT / "ablations" / "smoke.yaml").read_text(encoding="utf-8")
SMOKE = yaml.safe_load(SMOKE_TEXT)
MISSING_ROOT = "/nonexistent/lth-ray-malformed-test-data"

CATEGORIES = (
    "types",
    "ranges",
    "names",
    "structure",
    "encoding",
    "set",
    "cross",
    "data",
    "yaml",
    "size",
    "merge",
)
DEL = object()  # `edit` value: remove the field


@dataclass(frozen=True)
class Case:
    id: str
    text: str | bytes  # the file's content
    extra_args: tuple[str, ...]  # after `FILE --dry-run`
    field: str | tuple[str, ...]  # the offending field; a tuple lists equally correct namings
    category: str = ""


# ----------------------------------------------------------------------------------------------
# Building a case from smoke.yaml.


def _keys(path: str) -> list[str]:
    """'train.lr' -> ['train', 'lr']; grid keys are dotted fields: 'grid.prune.rewind' -> 2 keys."""
    parts = path.split(".")
    if parts[0] == "grid" and len(parts) > 1:
        return ["grid", ".".join(parts[1:])]
    return parts


def edit(changes: dict[str, Any]) -> str:
    """smoke.yaml with these dotted fields set (or removed with DEL), as YAML text."""
    data = copy.deepcopy(SMOKE)
    for path, value in changes.items():
        *parents, leaf = _keys(path)
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DEL:
            del node[leaf]
        else:
            node[leaf] = value
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def sub(old: str, new: str) -> str:
    """smoke.yaml's text with one exact piece replaced (it must occur exactly once)."""
    assert SMOKE_TEXT.count(old) == 1, f"smoke.yaml changed: {old!r} no longer occurs once"
    return SMOKE_TEXT.replace(old, new)


def cases(category: str, items: list[Case]) -> list[Case]:
    return [dataclasses.replace(c, category=category) for c in items]


def C(id: str, text: str | bytes, field: str | tuple[str, ...], *extra: str) -> Case:  # noqa: N802
    return Case(id, text, tuple(extra), field)


LAYERWISE = {"prune.scope": "layerwise"}
NO_CRITERION_AXIS = {"grid.prune.criterion": DEL, "controls": DEL}

# ----------------------------------------------------------------------------------------------
# The corpus.

TYPES = cases(
    "types",
    [
        C("types-lr-word", edit({"train.lr": "fast"}), "train.lr"),
        C("types-branch-from-word", edit({"tune.branch_from": "ticket"}), "tune.branch_from"),
        C("types-lr-list", edit({"train.lr": [1e-3, 2e-3]}), "train.lr"),
        C("types-lr-mapping", edit({"train.lr": {"value": 1e-3}}), "train.lr"),
        C("types-batch-size-float", edit({"train.batch_size": 50.5}), "train.batch_size"),
        C("types-batch-size-word", edit({"train.batch_size": "fifty"}), "train.batch_size"),
        C("types-batch-size-bool", edit({"train.batch_size": True}), "train.batch_size"),
        C("types-split-seed-bool", edit({"dataset.split_seed": True}), "dataset.split_seed"),
        C("types-rounds-bool", edit({"prune.rounds": True}), "prune.rounds"),
        C("types-rounds-float", edit({"prune.rounds": 2.5}), "prune.rounds"),
        C("types-val-size-float", edit({"dataset.val_size": 200.5}), "dataset.val_size"),
        C("types-val-size-list", edit({"dataset.val_size": [100, 200]}), "dataset.val_size"),
        C("types-width-word", edit({"model.width": "narrow"}), "model.width"),
        C("types-download-int", edit({"dataset.download": 1}), "dataset.download"),
        C("types-drop-last-word", edit({"train.drop_last": "sometimes"}), "train.drop_last"),
        C("types-exclude-mapping", edit({"prune.exclude": {"output": True}}), "prune.exclude"),
        C(
            "types-shape-mapping",
            edit({"dataset.synthetic_shape": {"c": 3, "h": 16, "w": 16}}),
            "dataset.synthetic_shape",
        ),
        C(
            "types-shape-floats",
            edit({"dataset.synthetic_shape": [3, 16.5, 16]}),
            "dataset.synthetic_shape",
        ),
        C("types-betas-string", edit({"train.betas": "0.9, 0.999"}), "train.betas"),
        C("types-betas-words", edit({"train.betas": ["high", "higher"]}), "train.betas"),
        C(
            "types-layer-fractions-list",
            edit({**LAYERWISE, "prune.layer_fractions": [0.1, 0.2]}),
            "prune.layer_fractions",
        ),
        C(
            "types-layer-fraction-word",
            edit({**LAYERWISE, "prune.layer_fractions": {"conv": "half"}}),
            "prune.layer_fractions.conv",
        ),
        C("types-dataset-scalar", edit({"dataset": "synthetic"}), "dataset"),
        C("types-train-list", edit({"train": ["lr", 2e-3]}), "train"),
        C("types-description-mapping", edit({"description": {"text": "hi"}}), "description"),
        C("types-initial-no-unit", edit({"train.initial": 3}), "train.initial"),
        C("types-retrain-float", edit({"train.retrain": 2.5}), "train.retrain"),
        C(
            "types-controls-criteria-string",
            edit({"controls.criteria": "magnitude"}),
            "controls.criteria",
        ),
        C(
            "types-control-count-float",
            edit({"controls": {"kinds": {"reinit": 1.5}}}),
            ("controls.kinds.reinit", "controls.reinit"),
        ),
        C("types-cpu-word", edit({"resources.cpu": "one"}), "resources.cpu"),
        C("types-max-failures-float", edit({"tune.max_failures": 2.5}), "tune.max_failures"),
        C("types-max-concurrent-bool", edit({"tune.max_concurrent": True}), "tune.max_concurrent"),
        C("types-one-shot-word", edit({"baselines.one_shot": "sure"}), "baselines.one_shot"),
        C("types-grid-seed-word", edit({"grid.seed": [0, "one"]}), "grid.seed"),
        C("types-grid-seed-bool", edit({"grid.seed": [True, False]}), "grid.seed"),
        C("types-grid-lr-words", edit({"grid.train.lr": ["low", "high"]}), "grid.train.lr"),
        C("types-nesterov-word", edit({"train.nesterov": "sometimes"}), "train.nesterov"),
        C("types-gamma-word", edit({"train.gamma": "tenth"}), "train.gamma"),
        C("types-warmup-no-unit", edit({"train.warmup": 5}), "train.warmup"),
        C("types-milestones-string", edit({"train.milestones": "1ep,2ep"}), "train.milestones"),
        C("types-milestones-mapping", edit({"train.milestones": {"1ep": 0.1}}), "train.milestones"),
        C("types-augment-string", edit({"dataset.augment": "flip"}), "dataset.augment"),
        C("types-augment-mapping", edit({"dataset.augment": {"flip": True}}), "dataset.augment"),
        C("types-retrain-mode-bool", edit({"prune.retrain_mode": True}), "prune.retrain_mode"),
        C("types-bn-init-number", edit({"model.bn_init": 1}), "model.bn_init"),
        C("types-bias-init-bool", edit({"model.bias_init": False}), "model.bias_init"),
    ],
)

RANGES = cases(
    "ranges",
    [
        C("ranges-lr-zero", edit({"train.lr": 0}), "train.lr"),
        C("ranges-lr-negative", edit({"train.lr": -1e-3}), "train.lr"),
        C("ranges-lr-inf", sub("lr: 2.0e-3", "lr: .inf"), "train.lr"),
        C("ranges-lr-nan", sub("lr: 2.0e-3", "lr: .nan"), "train.lr"),
        C("ranges-eps-zero", edit({"train.eps": 0}), "train.eps"),
        C("ranges-eps-negative", edit({"train.eps": -1e-7}), "train.eps"),
        C("ranges-betas-one", edit({"train.betas": [0.9, 1.0]}), "train.betas"),
        C("ranges-betas-negative", edit({"train.betas": [-0.1, 0.999]}), "train.betas"),
        C("ranges-betas-three", edit({"train.betas": [0.9, 0.99, 0.999]}), "train.betas"),
        C(
            "ranges-momentum-negative",
            edit({"train.optimizer": "sgd", "train.momentum": -0.5}),
            "train.momentum",
        ),
        C(
            "ranges-momentum-one",
            edit({"train.optimizer": "sgd", "train.momentum": 1.0}),
            "train.momentum",
        ),
        C("ranges-weight-decay-negative", edit({"train.weight_decay": -1}), "train.weight_decay"),
        C("ranges-batch-size-zero", edit({"train.batch_size": 0}), "train.batch_size"),
        C("ranges-batch-size-negative", edit({"train.batch_size": -50}), "train.batch_size"),
        C(
            "ranges-eval-batch-size-zero",
            edit({"train.eval_batch_size": 0}),
            "train.eval_batch_size",
        ),
        C("ranges-initial-zero", edit({"train.initial": "0ep"}), "train.initial"),
        C("ranges-retrain-zero", edit({"train.retrain": "0it"}), "train.retrain"),
        C("ranges-fraction-zero", edit({"prune.fraction": 0}), "prune.fraction"),
        C("ranges-fraction-one", edit({"prune.fraction": 1}), "prune.fraction"),
        C("ranges-fraction-above-one", edit({"prune.fraction": 1.5}), "prune.fraction"),
        C("ranges-fraction-percent", edit({"prune.fraction": 20}), "prune.fraction"),
        C(
            "ranges-layer-fraction-one",
            edit({**LAYERWISE, "prune.layer_fractions": {"conv": 1.0}}),
            "prune.layer_fractions.conv",
        ),
        C("ranges-rounds-negative", edit({"prune.rounds": -1}), "prune.rounds"),
        C("ranges-rounds-huge", edit({"prune.rounds": 1000000}), "prune.rounds"),
        C(
            "ranges-control-index-negative",
            edit({"prune.control_index": -1}),
            "prune.control_index",
        ),
        C("ranges-width-zero", edit({"model.width": 0}), "model.width"),
        C("ranges-width-negative", edit({"model.width": -1}), "model.width"),
        C("ranges-width-inf", sub("width: 0.125", "width: .inf"), "model.width"),
        C("ranges-width-tiny", edit({"model.width": 1e-9}), "model.width"),
        C("ranges-gpu-negative", edit({"resources.gpu": -1}), "resources.gpu"),
        C("ranges-gpu-inf", edit({"resources.gpu": float("inf")}), "resources.gpu"),
        C("ranges-gpu-one-and-a-half", edit({"resources.gpu": 1.5}), "resources.gpu"),
        C("ranges-cpu-zero", edit({"resources.cpu": 0}), "resources.cpu"),
        C("ranges-cpu-negative", edit({"resources.cpu": -2}), "resources.cpu"),
        C("ranges-max-failures-negative", edit({"tune.max_failures": -1}), "tune.max_failures"),
        C(
            "ranges-max-concurrent-negative",
            edit({"tune.max_concurrent": -1}),
            "tune.max_concurrent",
        ),
        C("ranges-val-size-zero", edit({"dataset.val_size": 0}), "dataset.val_size"),
        C("ranges-val-size-negative", edit({"dataset.val_size": -200}), "dataset.val_size"),
        C(
            "ranges-synthetic-train-zero",
            edit({"dataset.synthetic_train": 0}),
            "dataset.synthetic_train",
        ),
        C(
            "ranges-synthetic-test-zero",
            edit({"dataset.synthetic_test": 0}),
            "dataset.synthetic_test",
        ),
        C(
            "ranges-synthetic-classes-one",
            edit({"dataset.synthetic_classes": 1}),
            "dataset.synthetic_classes",
        ),
        C(
            "ranges-synthetic-classes-zero",
            edit({"dataset.synthetic_classes": 0}),
            "dataset.synthetic_classes",
        ),
        C(
            "ranges-synthetic-shape-2d",
            edit({"dataset.synthetic_shape": [3, 16]}),
            "dataset.synthetic_shape",
        ),
        C(
            "ranges-synthetic-shape-zero",
            edit({"dataset.synthetic_shape": [0, 16, 16]}),
            "dataset.synthetic_shape",
        ),
        C(
            "ranges-synthetic-shape-negative",
            edit({"dataset.synthetic_shape": [3, -16, 16]}),
            "dataset.synthetic_shape",
        ),
        C("ranges-grid-fraction", edit({"grid.prune.fraction": [0.2, 1.2]}), "grid.prune.fraction"),
        C("ranges-grid-lr", edit({"grid.train.lr": [1e-3, 0]}), "grid.train.lr"),
        C("ranges-gamma-zero", edit({"train.gamma": 0}), "train.gamma"),
        C("ranges-gamma-above-one", edit({"train.gamma": 10}), "train.gamma"),
        C(
            "ranges-milestone-zero",
            edit({"train.optimizer": "sgd", "train.milestones": ["0ep"]}),
            "train.milestones",
        ),
    ],
)

NAMES = cases(
    "names",
    [
        C("names-dataset-unknown", edit({"dataset.name": "cifar100"}), "dataset.name"),
        C("names-dataset-capitalised", edit({"dataset.name": "Synthetic"}), "dataset.name"),
        C("names-model-unknown", edit({"model.arch": "resnet18"}), "model.arch"),
        C(
            "names-criterion-unknown",
            edit({**NO_CRITERION_AXIS, "prune.criterion": "magnitud"}),
            "prune.criterion",
        ),
        C(
            "names-criterion-unknown-in-grid",
            edit({"grid.prune.criterion": ["magnitude", "stabilty"]}),
            "grid.prune.criterion",
        ),
        C(
            "names-controls-criterion-unknown",
            edit({"controls.criteria": ["magnitde"]}),
            "controls.criteria",
        ),
        C(
            "names-controls-criterion-not-swept",
            edit({"controls.criteria": ["large_init_large_final"]}),
            "controls.criteria",
        ),
        C("names-optimizer-unknown", edit({"train.optimizer": "sgdm"}), "train.optimizer"),
        C("names-padding-unknown", edit({"model.padding": "full"}), "model.padding"),
        C("names-init-unknown", edit({"model.init": "xavier"}), "model.init"),
        C("names-precision-unknown", edit({"train.precision": "fp16"}), "train.precision"),
        C("names-device-unknown", edit({"train.device": "gpu"}), "train.device"),
        C("names-eps-style-unknown", edit({"train.eps_style": "tf"}), "train.eps_style"),
        C("names-scope-unknown", edit({"prune.scope": "local"}), "prune.scope"),
        C("names-schedule-unknown", edit({"prune.schedule": "oneshot"}), "prune.schedule"),
        C(
            "names-rewind-budget-unknown",
            edit({"prune.rewind_budget": "half"}),
            "prune.rewind_budget",
        ),
        C("names-scale-unknown", edit({"dataset.scale": "normalize"}), "dataset.scale"),
        C(
            "names-gpu-fallback-unknown",
            edit({"resources.gpu_fallback": "wait"}),
            "resources.gpu_fallback",
        ),
        C("names-top-datset", sub("dataset:", "datset:"), "datset"),
        C("names-top-grids", sub("grid:", "grids:"), "grids"),
        C("names-top-control", sub("controls:", "control:"), "control"),
        C("names-top-desription", sub("description:", "desription:"), "desription"),
        C("names-dataset-val-szie", sub("val_size:", "val_szie:"), "dataset.val_szie"),
        C(
            "names-model-architecture",
            sub("arch: conv2", "architecture: conv2"),
            "model.architecture",
        ),
        C(
            "names-train-learning-rate",
            sub("lr: 2.0e-3", "learning_rate: 2.0e-3"),
            "train.learning_rate",
        ),
        C("names-prune-fractoin", sub("fraction: 0.3", "fractoin: 0.3"), "prune.fractoin"),
        C("names-resources-cpus", sub("cpu: 0.25", "cpus: 0.25"), "resources.cpus"),
        C("names-tune-max-failure", edit({"tune.max_failure": 5}), "tune.max_failure"),
        C("names-baselines-oneshot", edit({"baselines.oneshot": True}), "baselines.oneshot"),
        C("names-controls-kind", sub("kinds: [reinit]", "kind: [reinit]"), "controls.kind"),
        C(
            "names-grid-axis-typo",
            sub("prune.criterion: [", "prune.critera: ["),
            ("grid.prune.critera",),
        ),
        C(
            "names-grid-section-typo",
            edit({"grid.trian.lr": [1e-3, 2e-3]}),
            "grid.trian.lr",
        ),
        C("names-grid-alias-typo", edit({"grid.critera": ["magnitude", "random"]}), "grid.critera"),
        C("names-exclude-typo", edit({"prune.exclude": ["outptu"]}), "prune.exclude"),
        C(
            "names-exclude-partial-layer-name",
            edit({"prune.exclude": ["classifier"]}),
            "prune.exclude",
        ),
        C(
            "names-exclude-every-layer",
            edit({"prune.exclude": ["conv", "fc", "output"]}),
            "prune.exclude",
        ),
        C(
            "names-layer-fractions-unknown-type",
            edit({**LAYERWISE, "prune.layer_fractions": {"dense": 0.2}}),
            ("prune.layer_fractions.dense", "prune.layer_fractions"),
        ),
        C(
            "names-control-kind-unknown",
            edit({"controls": ["reinit", "shuffle"]}),
            ("controls.shuffle", "controls[1]", "controls.kinds.shuffle"),
        ),
        C(
            "names-control-kind-unknown-mapping",
            edit({"controls": {"kinds": {"reinit": 1, "randm_mask": 1}}}),
            ("controls.kinds.randm_mask", "controls.randm_mask"),
        ),
        C(
            "names-baselines-random-mask",
            edit({"baselines.random_mask": True}),
            "baselines.random_mask",
        ),
        C("names-augment-typo", edit({"dataset.augment": ["crop", "flop"]}), "dataset.augment"),
        C(
            "names-retrain-mode-typo",
            edit({"prune.retrain_mode": "lr_rewinding"}),
            "prune.retrain_mode",
        ),
        C("names-lr-schedule-typo", edit({"train.lr_schedule": "cosin"}), "train.lr_schedule"),
        C("names-bn-init-typo", edit({"model.bn_init": "ones"}), "model.bn_init"),
        C("names-bias-init-typo", edit({"model.bias_init": "zeros"}), "model.bias_init"),
        C("names-resnet-depth", edit({"model.arch": "cifar_resnet_21"}), "model.arch"),
        C("names-vgg-depth", edit({"model.arch": "cifar_vgg_15"}), "model.arch"),
        C("names-warmup-unit", edit({"train.warmup": "5 epochs"}), "train.warmup"),
        C(
            "names-milestone-unit",
            edit({"train.optimizer": "sgd", "train.milestones": ["1ep", "2epochs"]}),
            "train.milestones",
        ),
        C(
            "names-exclude-resnet-partial",
            edit({"model.arch": "cifar_resnet_20", "prune.exclude": ["blocks.0"]}),
            "prune.exclude",
        ),
    ],
)

STRUCTURE = cases(
    "structure",
    [
        C("structure-empty", "", "<file>"),
        C("structure-blank-lines", "\n\n   \n", "<file>"),
        C("structure-only-comments", "# name: smoke\n# seed: 0\n", "<file>"),
        C("structure-top-list", "- name: smoke\n- seed: 0\n", "<file>"),
        C("structure-top-scalar", "smoke\n", "<file>"),
        C("structure-top-number", "42\n", "<file>"),
        C("structure-two-documents", SMOKE_TEXT + "---\n" + SMOKE_TEXT, "<file>"),
        C("structure-unclosed-bracket", sub("exclude: [output]", "exclude: [output"), "<file>"),
        C("structure-bad-indent", sub("  batch_size: 50", " batch_size: 50"), "<file>"),
        C("structure-tab-indent", sub("  batch_size: 50", "\tbatch_size: 50"), "<file>"),
        C(
            "structure-python-tag",
            sub("lr: 2.0e-3", "lr: !!python/name:os.system"),
            ("<file>", "train.lr"),
        ),
        C("structure-duplicate-top-key", SMOKE_TEXT + "description: again\n", "description"),
        C(
            "structure-duplicate-nested-key",
            sub("  lr: 2.0e-3\n", "  lr: 2.0e-3\n  lr: 1.0e-3\n"),
            "train.lr",
        ),
        C(
            "structure-duplicate-grid-axis",
            sub("  seed: [0, 1]\n", "  seed: [0, 1]\n  seed: [2, 3]\n"),
            "grid.seed",
        ),
        C("structure-grid-list", edit({"grid": ["seed", 0, 1]}), "grid"),
        C("structure-grid-scalar", edit({"grid": "seed"}), "grid"),
        C("structure-grid-axis-empty", edit({"grid.seed": []}), "grid.seed"),
        C("structure-grid-axis-scalar", edit({"grid.seed": 3}), "grid.seed"),
        C("structure-grid-axis-mapping", edit({"grid.seed": {"from": 0, "to": 3}}), "grid.seed"),
        C("structure-grid-axis-null", sub("  seed: [0, 1]", "  seed:"), "grid.seed"),
        C("structure-grid-repeated-seed", edit({"grid.seed": [0, 1, 0]}), "grid.seed"),
        C(
            "structure-grid-repeated-criterion",
            edit({"grid.prune.criterion": ["magnitude", "random", "magnitude"]}),
            "grid.prune.criterion",
        ),
        C(
            "structure-grid-repeated-spelling",
            sub("  seed: [0, 1]\n", "  seed: [0, 1]\n  train.lr: [2.0e-3, 0.002]\n"),
            "grid.train.lr",
        ),
        C(
            "structure-bundle-value-not-mapping",
            edit({"grid.net": [{"model.arch": "conv2"}, "conv4"]}),
            "grid.net",
        ),
        C(
            "structure-bundle-unknown-field",
            edit(
                {
                    "grid.net": [
                        {"model.arch": "conv2", "train.learning_rate": 1e-3},
                        {"model.arch": "conv4"},
                    ]
                }
            ),
            ("grid.net[0].train.learning_rate", "grid.net.train.learning_rate"),
        ),
        C(
            "structure-bundle-empty-value",
            edit({"grid.net": [{}, {"model.arch": "conv4"}]}),
            "grid.net",
        ),
        C(
            "structure-bundle-only-label",
            edit({"grid.net": [{"label": "small"}, {"label": "big", "model.arch": "conv4"}]}),
            "grid.net",
        ),
        C(
            "structure-bundle-repeated",
            edit({"grid.net": [{"model.arch": "conv4"}, {"model.arch": "conv4"}]}),
            "grid.net",
        ),
        C(
            "structure-section-as-bundle",
            edit({"grid.train": [{"lr": 1e-3}, {"lr": 2e-3}]}),
            "grid.train",
        ),
        C(
            "structure-field-on-two-axes-alias",
            edit({"grid.criteria": ["magnitude", "random"]}),
            ("grid.criteria", "grid.prune.criterion"),
        ),
        C(
            "structure-field-on-two-axes-bundle",
            edit(
                {
                    "grid.net": [
                        {"seed": 5, "model.arch": "conv2"},
                        {"seed": 6, "model.arch": "conv4"},
                    ]
                }
            ),
            ("grid.net", "grid.seed"),
        ),
        C("structure-grid-name-axis", edit({"grid.name": ["a", "b"]}), "grid.name"),
        C("structure-grid-key-axis", edit({"grid.key": ["a", "b"]}), "grid.key"),
        C(
            "structure-grid-control-index-axis",
            edit({"grid.prune.control_index": [0, 1]}),
            "grid.prune.control_index",
        ),
        C(
            "structure-controls-count-zero",
            edit({"controls": {"kinds": {"reinit": 0}}}),
            ("controls.kinds.reinit", "controls.reinit"),
        ),
        C(
            "structure-controls-count-negative",
            edit({"controls": {"kinds": {"random_mask": -1}}}),
            ("controls.kinds.random_mask", "controls.random_mask"),
        ),
        C("structure-controls-scalar", edit({"controls": "reinit"}), "controls"),
        C(
            "structure-baselines-reinit-and-controls",
            edit({"baselines.reinit": ["magnitude"]}),
            "baselines.reinit",
        ),
        C("structure-baselines-list", edit({"baselines": ["one_shot"]}), "baselines"),
        C("structure-resources-list", edit({"resources": [0.25, 0]}), "resources"),
    ],
)

_NUL = SMOKE_TEXT.encode().replace(b"seed: 0\n", b"seed: 0\x00\n", 1)
ENCODING = cases(
    "encoding",
    [
        C(
            "encoding-latin1-value",
            sub("Tiny synthetic", "Tiny caf\xe9 synthetic").encode("latin-1"),
            "<file>",
        ),
        C("encoding-latin1-comment", ("# r\xe9sum\xe9\n" + SMOKE_TEXT).encode("latin-1"), "<file>"),
        C(
            "encoding-cp1252-quotes",
            sub("magnitude]    #", "\u201cmagnitude\u201d]    #").encode("cp1252"),
            "<file>",
        ),
        C("encoding-utf16-bom", SMOKE_TEXT.encode("utf-16"), "<file>"),
        C("encoding-utf16-le-no-bom", SMOKE_TEXT.encode("utf-16-le"), "<file>"),
        C("encoding-utf32", SMOKE_TEXT.encode("utf-32"), "<file>"),
        C("encoding-nul-byte", _NUL, "<file>"),
        C("encoding-bell-char", sub("Tiny synthetic", "Tiny \a synthetic").encode(), "<file>"),
        C("encoding-binary-garbage", bytes(range(256)) * 4, "<file>"),
        C("encoding-gzip", gzip.compress(SMOKE_TEXT.encode(), mtime=0), "<file>"),
        C("encoding-png-header", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(32), "<file>"),
    ],
)

SET = cases(
    "set",
    [
        C("set-bad-yaml", SMOKE_TEXT, "train.lr", "--set", "train.lr=[1,2"),
        C("set-missing-equals", SMOKE_TEXT, "train.lr", "--set", "train.lr"),
        C("set-empty-key", SMOKE_TEXT, "--set", "--set", "=5"),
        C("set-empty-value", SMOKE_TEXT, "train.lr", "--set", "train.lr="),
        C("set-unknown-field", SMOKE_TEXT, "train.lrr", "--set", "train.lrr=1.0e-3"),
        C("set-unknown-section", SMOKE_TEXT, "trian", "--set", "trian.lr=1.0e-3"),
        C("set-wrong-type", SMOKE_TEXT, "train.batch_size", "--set", "train.batch_size=abc"),
        C("set-list-for-scalar", SMOKE_TEXT, "train.lr", "--set", "train.lr=[1.0e-3, 2.0e-3]"),
        C("set-scalar-for-list", SMOKE_TEXT, "prune.exclude", "--set", "prune.exclude=7"),
        C("set-out-of-range", SMOKE_TEXT, "prune.fraction", "--set", "prune.fraction=1.5"),
        C("set-sub-field-of-scalar", SMOKE_TEXT, "train.lr", "--set", "train.lr.value=1"),
        C("set-section-to-scalar", SMOKE_TEXT, "train", "--set", "train=5"),
        C("set-unknown-dataset", SMOKE_TEXT, "dataset.name", "--set", "dataset.name=cifar100"),
        C("set-grid-axis-scalar", SMOKE_TEXT, "grid.seed", "--set", "grid.seed=3"),
        C(
            "set-grid-axis-bad-value",
            SMOKE_TEXT,
            "grid.prune.fraction",
            "--set",
            "grid.prune.fraction=[0.2, 2]",
        ),
        C(
            "set-grid-unknown-axis",
            SMOKE_TEXT,
            "grid.prune.critreion",
            "--set",
            "grid.prune.critreion=[magnitude]",
        ),
        C(
            "set-controls-unknown-kind",
            SMOKE_TEXT,
            ("controls.bogus", "controls[1]", "controls.kinds.bogus"),
            "--set",
            "controls=[reinit, bogus]",
        ),
        C(
            "set-second-bad-of-two",
            SMOKE_TEXT,
            "train.eps",
            "--set",
            "train.lr=1.0e-3",
            "--set",
            "train.eps=-1",
        ),
        C(
            "set-max-concurrent-negative",
            SMOKE_TEXT,
            "tune.max_concurrent",
            "--max-concurrent",
            "-1",
        ),
    ],
)

CROSS = cases(
    "cross",
    [
        C("cross-rewind-beyond-round0-ep", edit({"prune.rewind": "4ep"}), "prune.rewind"),
        C(
            "cross-rewind-beyond-round0-it",
            edit({"train.initial": "100it", "train.retrain": "100it", "prune.rewind": "200it"}),
            "prune.rewind",
        ),
        # 1000 training examples / batch 50 = 20 iterations per epoch: round 0 is 60 iterations.
        C("cross-rewind-it-beyond-round0-ep", edit({"prune.rewind": "5000it"}), "prune.rewind"),
        C(
            "cross-rewind-ep-beyond-round0-it",
            edit({"train.initial": "30it", "train.retrain": "4ep", "prune.rewind": "2ep"}),
            "prune.rewind",
        ),
        C(
            "cross-rewind-no-retraining",
            edit({"prune.rewind": "2ep"}),  # retrain 2ep - rewind 2ep = nothing left
            "prune.rewind",
        ),
        C(
            "cross-rewind-no-retraining-mixed-units",
            edit({"train.retrain": "40it", "prune.rewind": "2ep"}),  # 2ep = 40it
            "prune.rewind",
        ),
        C(
            "cross-rewind-grid-beyond-round0",
            edit({"grid.prune.rewind": ["init", "1ep", "5ep"]}),
            "grid.prune.rewind",
        ),
        C(
            "cross-rewind-grid-combination",
            edit(  # each value fits alone; 2ep does not fit a 1ep round 0
                {
                    "train.retrain": "4ep",
                    "grid.prune.rewind": ["init", "2ep"],
                    "grid.train.initial": ["1ep", "3ep"],
                }
            ),
            ("prune.rewind", "grid.prune.rewind", "grid.train.initial"),
        ),
        C("cross-rewind-garbage", edit({"prune.rewind": "epoch1"}), "prune.rewind"),
        C(
            "cross-layer-fractions-global-scope",
            edit({"prune.layer_fractions": {"conv": 0.2}}),
            "prune.layer_fractions",
        ),
        C(
            "cross-fraction-axis-never-used",
            edit(
                {
                    **LAYERWISE,
                    "prune.layer_fractions": {"conv": 0.1, "fc": 0.2},
                    "grid.prune.fraction": [0.2, 0.3],
                }
            ),
            "grid.prune.fraction",
        ),
        C("cross-eval-every-zero", edit({"train.eval_every": "0ep"}), "train.eval_every"),
        C("cross-eval-every-garbage", edit({"train.eval_every": "often"}), "train.eval_every"),
        C(
            "cross-image-too-small-for-model",
            edit({"dataset.synthetic_shape": [3, 1, 1]}),
            ("dataset.synthetic_shape", "model.arch"),
        ),
        C(
            "cross-rewind-past-retrain",
            edit({"train.retrain": "30it", "prune.rewind": "40it"}),  # round 0 is 60it
            "prune.rewind",
        ),
        C(
            "cross-layer-fraction-of-excluded-type",
            edit({**LAYERWISE, "prune.layer_fractions": {"output": 0.1}}),  # exclude: [output]
            ("prune.layer_fractions.output", "prune.layer_fractions", "prune.exclude"),
        ),
        C("cross-milestones-with-adam", edit({"train.milestones": ["1ep"]}), "train.milestones"),
        C("cross-warmup-with-adam", edit({"train.warmup": "10it"}), "train.warmup"),
        C("cross-cosine-with-adam", edit({"train.lr_schedule": "cosine"}), "train.lr_schedule"),
        C("cross-nesterov-with-adam", edit({"train.nesterov": True}), "train.nesterov"),
        C(
            "cross-nesterov-without-momentum",
            edit({"train.optimizer": "sgd", "train.nesterov": True, "train.momentum": 0}),
            "train.nesterov",
        ),
        C(
            "cross-cosine-with-milestones",
            edit(
                {
                    "train.optimizer": "sgd",
                    "train.lr_schedule": "cosine",
                    "train.milestones": ["1ep"],
                }
            ),
            "train.milestones",
        ),
        C(
            "cross-augment-twice",
            edit({"dataset.augment": ["flip", "crop", "flip"]}),
            "dataset.augment",
        ),
        C(
            "cross-vgg-on-small-images",
            edit({"model.arch": "cifar_vgg_11"}),
            ("dataset.synthetic_shape", "model.arch"),
        ),
        C(
            "cross-grid-retrain-mode-typo",
            edit({"grid.prune.retrain_mode": ["weight_rewind", "finetuning"]}),
            "grid.prune.retrain_mode",
        ),
    ],
)

_CIFAR = {"dataset": {"name": "cifar10", "root": MISSING_ROOT, "download": False, "val_size": 5000}}
DATA = cases(
    "data",
    [
        C("data-val-size-equals-pool", edit({"dataset.val_size": 1200}), "dataset.val_size"),
        C("data-val-size-exceeds-pool", edit({"dataset.val_size": 5000}), "dataset.val_size"),
        C(
            "data-pool-smaller-than-val",
            edit({"dataset.synthetic_train": 150}),
            ("dataset.val_size", "dataset.synthetic_train"),
        ),
        C(
            "data-set-pool-smaller-than-val",
            SMOKE_TEXT,
            ("dataset.val_size", "dataset.synthetic_train"),
            "--set",
            "dataset.synthetic_train=200",
        ),
        C(
            "data-grid-val-size-too-big",
            edit({"grid.dataset.val_size": [200, 1200]}),
            ("grid.dataset.val_size", "dataset.val_size"),
        ),
        C(
            "data-grid-pool-too-small",
            edit({"grid.dataset.synthetic_train": [1200, 150]}),
            ("grid.dataset.synthetic_train", "dataset.val_size"),
        ),
        C("data-train-limit-zero", edit({"dataset.train_limit": 0}), "dataset.train_limit"),
        C("data-train-limit-negative", edit({"dataset.train_limit": -10}), "dataset.train_limit"),
        C("data-test-limit-zero", edit({"dataset.test_limit": 0}), "dataset.test_limit"),
        C("data-test-limit-negative", edit({"dataset.test_limit": -10}), "dataset.test_limit"),
        C("data-cifar10-missing-root", edit(_CIFAR), "dataset.root"),
        C(
            "data-mnist-missing-root",
            edit({"dataset": {**_CIFAR["dataset"], "name": "mnist"}}),
            "dataset.root",
        ),
        C(
            "data-fashion-mnist-missing-root",
            edit({"dataset": {**_CIFAR["dataset"], "name": "fashion_mnist"}}),
            "dataset.root",
        ),
        C(
            "data-image-folder-missing-root",
            edit({"dataset": {"name": "image_folder", "root": MISSING_ROOT, "val_size": 100}}),
            "dataset.root",
        ),
        C(
            "data-cifar10-missing-data-root-flag",
            edit({"dataset": {"name": "cifar10", "download": False, "val_size": 5000}}),
            ("dataset.root", "--data-root"),
            "--data-root",
            MISSING_ROOT,
        ),
    ],
)

# YAML that would crash or hang a loader that follows every alias.
_LAUGHS = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10)
)  # l9 stands for 10^9 strings
_DEEP = 2000
_BOMB = tuple(f"l{i}" for i in range(4, 10))  # the first node over the cap is named
YAML = cases(
    "yaml",
    [
        C("yaml-recursive-alias-list", SMOKE_TEXT + "tags: &a [*a]\n", ("tags", "<file>")),
        C(
            "yaml-recursive-alias-mapping",
            sub("description: Tiny", "description: &d {self: *d}\n#"),
            ("description", "description.self"),
        ),
        C(
            "yaml-recursive-alias-in-grid",
            sub("  seed: [0, 1]\n", "  seed: &s [0, *s]\n"),
            ("grid.seed", "grid.seed[1]"),
        ),
        C("yaml-deep-flow-list", SMOKE_TEXT + "x: " + "[" * _DEEP + "]" * _DEEP + "\n", "<file>"),
        C(
            "yaml-deep-flow-mapping",
            SMOKE_TEXT + "x: " + "{a: " * _DEEP + "1" + "}" * _DEEP + "\n",
            "<file>",
        ),
        C(
            "yaml-deep-block-mapping",
            SMOKE_TEXT + "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n",
            ("<file>", "k0"),
        ),
        C(
            "yaml-deep-but-parsable",
            SMOKE_TEXT + "x: " + "[" * 60 + "]" * 60 + "\n",
            ("x", "<file>"),
        ),
        C("yaml-billion-laughs", "a0: &l0 lol\n" + _LAUGHS + SMOKE_TEXT, _BOMB),
        C(
            "yaml-billion-laughs-in-description",
            "a0: &l0 lol\n"
            + _LAUGHS
            + sub("description: Tiny synthetic end-to-end check.", "description: *l9"),
            (*_BOMB, "description"),
        ),
        C(
            "yaml-laughs-in-set",
            SMOKE_TEXT,
            ("description", "<file>"),
            "--set",
            "description=[&a [x, x, x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a],"
            " &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c],"
            " &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d], [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]]",
        ),
        C("yaml-recursive-alias-in-set", SMOKE_TEXT, "description", "--set", "description=&a [*a]"),
        C("yaml-integer-of-5000-digits", sub("seed: 0\n", "seed: " + "9" * 5000 + "\n"), "<file>"),
        C("yaml-mapping-as-key", SMOKE_TEXT + "? [a, b]\n: 1\n", "<file>"),
        C("yaml-oversized-file", SMOKE_TEXT + "# " + "x" * (1 << 20) + "\n", "<file>"),
    ],
)

# Sizes counted before anything is expanded (each must fail in well under a second).
_AXES_1E7 = {
    f"grid.{k}": v
    for k, v in {
        "seed": list(range(10)),
        "prune.fraction": [round(0.05 * i, 2) for i in range(1, 11)],
        "train.lr": [1e-3 * i for i in range(1, 11)],
        "train.batch_size": list(range(41, 51)),
        "dataset.split_seed": list(range(10)),
        "train.weight_decay": [1e-4 * i for i in range(10)],
        "model.width": [0.125 + 0.0625 * i for i in range(10)],
    }.items()
}
SIZE = cases(
    "size",
    [
        C("size-grid-product-1e7", edit({**_AXES_1E7, "grid.prune.criterion": DEL}), "grid"),
        C("size-control-count-1e9", edit({"controls.kinds": {"reinit": 10**9}}), "controls.kinds"),
        C(
            "size-random-mask-count-1e9",
            edit({"controls.kinds": {"random_mask": 10**9}}),
            "controls.kinds",
        ),
        C("size-max-trials-flag", SMOKE_TEXT, ("grid", "--max-trials"), "--max-trials", "5"),
        C("size-max-trials-field", edit({"tune.max_trials": 3}), ("grid", "tune.max_trials")),
        C("size-max-trials-zero", edit({"tune.max_trials": 0}), "tune.max_trials"),
        C(
            "size-set-control-count",
            SMOKE_TEXT,
            "controls.kinds",
            "--set",
            "controls={kinds: {reinit: 1000000000}}",
        ),
        C(
            "size-baselines-push-over-cap",
            edit({"tune.max_trials": 15, "baselines.one_shot": True}),  # 10 trials, 18 with
            ("grid", "tune.max_trials"),
        ),
        C("size-long-seed-axis", edit({"grid.seed": list(range(20000))}), "grid"),
        C(
            "size-two-long-axes",
            edit({"grid.seed": list(range(200)), "grid.dataset.split_seed": list(range(200))}),
            "grid",
        ),
    ],
)

# Values that would become identical trials, or the same work twice, or arms that do nothing.
_NET = "grid.net"
MERGE = cases(
    "merge",
    [
        C(
            "merge-bundle-values-equal",
            edit({_NET: [{"train.lr": 1e-3, "label": "a"}, {"train.lr": 1e-3, "label": "b"}]}),
            "grid.net",
        ),
        C(
            "merge-bundle-values-equal-to-base",
            edit({_NET: [{"train.lr": 2e-3}, {"train.batch_size": 50}]}),  # both are the base
            "grid.net",
        ),
        C(
            "merge-bundle-labels-collide",
            edit({_NET: [{"train.lr": 1e-3, "label": "x"}, {"train.lr": 3e-3, "label": "x"}]}),
            "grid.net[1].label",
        ),
        C(
            "merge-bundle-label-empty",
            edit({_NET: [{"train.lr": 1e-3, "label": ""}, {"train.lr": 3e-3}]}),
            "grid.net[0].label",
        ),
        C(
            "merge-bundle-label-number",
            edit({_NET: [{"train.lr": 1e-3, "label": 1}, {"train.lr": 3e-3, "label": 2}]}),
            "grid.net[0].label",
        ),
        C(
            "merge-bundle-label-list",
            edit({_NET: [{"train.lr": 1e-3, "label": ["a"]}, {"train.lr": 3e-3}]}),
            "grid.net[0].label",
        ),
        C(
            "merge-bundle-label-path",
            edit({_NET: [{"train.lr": 1e-3, "label": "../x"}, {"train.lr": 3e-3}]}),
            "grid.net[0].label",
        ),
        # 1000 training examples / batch 50 = 20 iterations per epoch: 3ep is 60it.
        C(
            "merge-epochs-equal-iterations",
            edit({"grid.train.initial": ["3ep", "60it"]}),
            "grid.train.initial",
        ),
        C(
            "merge-retrain-equal-iterations",
            edit({"grid.train.retrain": ["40it", "2ep"]}),
            "grid.train.retrain",
        ),
        C(
            "merge-rewind-0ep-beside-init",
            edit({"grid.prune.rewind": ["init", "0ep"]}),
            "grid.prune.rewind",
        ),
        C(
            "merge-rewind-0it-beside-0ep",
            edit({"grid.prune.rewind": ["0it", "0ep"]}),
            "grid.prune.rewind",
        ),
        C(
            "merge-rewind-budget-without-rewind",
            edit({"grid.prune.rewind_budget": ["remaining", "full"]}),  # rewind: init
            "grid.prune.rewind_budget",
        ),
        C(
            "merge-momentum-under-adam",
            edit({"grid.train.momentum": [0.9, 0.5]}),  # adam has no momentum
            "grid.train.momentum",
        ),
        C(
            "merge-eval-every-equal",
            edit({"grid.train.eval_every": ["1ep", "20it"]}),
            "grid.train.eval_every",
        ),
        C(
            "merge-controls-duplicate-kind",
            edit({"controls.kinds": ["reinit", "reinit"]}),
            "controls.kinds[1]",
        ),
        C(
            "merge-controls-shorthand-duplicate",
            edit({"controls": ["random_mask", "reinit", "random_mask"]}),
            "controls[2]",
        ),
        C("merge-prune-control-in-base", edit({"prune.control": "reinit"}), "prune.control"),
        C(
            "merge-prune-control-axis",
            edit({"grid.prune.control": ["none", "reinit"]}),
            "grid.prune.control",
        ),
        C(
            "merge-control-index-axis",
            edit({"grid.prune.control_index": [0, 1]}),
            ("grid.prune.control_index", "prune.control_index"),
        ),
        C(
            "merge-set-same-work",
            SMOKE_TEXT,
            "grid.train.initial",
            "--set",
            "grid.train.initial=[3ep, 60it]",
        ),
    ],
)

RANGES_MORE = cases(
    "ranges",
    [
        C("ranges-seed-2-63", edit({"seed": 2**63}), "seed"),
        C("ranges-seed-below-min", edit({"seed": -(2**63) - 1}), "seed"),
        C("ranges-split-seed-2-63", edit({"dataset.split_seed": 2**63}), "dataset.split_seed"),
        C("ranges-grid-seed-2-64", edit({"grid.seed": [0, 2**64]}), "grid.seed"),
        C(
            "ranges-synthetic-train-2-70",
            edit({"dataset.synthetic_train": 2**70}),
            "dataset.synthetic_train",
        ),
        C("ranges-val-size-2-70", edit({"dataset.val_size": 2**70}), "dataset.val_size"),
        C("ranges-train-limit-2-70", edit({"dataset.train_limit": 2**70}), "dataset.train_limit"),
        C(
            "ranges-synthetic-too-many-bytes",
            edit({"dataset.synthetic_shape": [3, 4096, 4096]}),
            ("dataset.synthetic_train", "dataset.synthetic_shape"),
        ),
        C("ranges-initial-2-70-epochs", edit({"train.initial": f"{2**70}ep"}), "train.initial"),
        C("ranges-retrain-2-70-iterations", edit({"train.retrain": f"{2**70}it"}), "train.retrain"),
        C(
            "ranges-eval-every-digits",
            edit({"train.eval_every": "9" * 5000 + "it"}),
            "train.eval_every",
        ),
        C("ranges-rounds-1e9", edit({"prune.rounds": 10**9}), "prune.rounds"),
        C("ranges-cpu-1e-300", edit({"resources.cpu": 1e-300}), "resources.cpu"),
        C("ranges-gpu-1e-9", edit({"resources.gpu": 1e-9}), "resources.gpu"),
        C("ranges-batch-size-2-40", edit({"train.batch_size": 2**40}), "train.batch_size"),
    ],
)

NAMES_MORE = cases(
    "names",
    [
        C("names-name-dotdot", edit({"name": ".."}), "name"),
        C("names-name-dot", edit({"name": "."}), "name"),
        C("names-name-trailing-newline", edit({"name": "smoke\n"}), "name"),
        C("names-name-300-chars", edit({"name": "s" * 300}), "name"),
        C("names-name-slash", edit({"name": "a/b"}), "name"),
        C("names-name-leading-dash", edit({"name": "-rf"}), "name"),
        C("names-name-quote", edit({"name": "x'y"}), "name"),
        C("names-set-name-dotdot", SMOKE_TEXT, "name", "--set", "name=.."),
        C("names-sweep-id-traversal", SMOKE_TEXT, "--sweep-id", "--sweep-id", "../../etc"),
        C("names-sweep-id-dotdot", SMOKE_TEXT, "--sweep-id", "--sweep-id", ".."),
        C("names-sweep-id-quote-resume", SMOKE_TEXT, "--sweep-id", "--resume", "--sweep-id", "x'y"),
        C("names-sweep-id-newline", SMOKE_TEXT, "--sweep-id", "--sweep-id", "x\n"),
        C("names-sweep-id-empty", SMOKE_TEXT, "--sweep-id", "--sweep-id", ""),
        C("names-sweep-id-300-chars", SMOKE_TEXT, "--sweep-id", "--sweep-id", "s" * 300),
    ],
)

SET_MORE = cases(
    "set",
    [
        C("set-dot-key", SMOKE_TEXT, "--set", "--set", ".=5"),
        C("set-double-dot-key", SMOKE_TEXT, "--set", "--set", "train..lr=5"),
        C("set-trailing-dot-key", SMOKE_TEXT, "--set", "--set", "train.=5"),
    ],
)

CROSS_MORE = cases(
    "cross",
    [
        C(
            "cross-eval-every-longer-than-round0",
            edit({"train.eval_every": "4ep"}),
            "train.eval_every",
        ),
        C(
            "cross-eval-every-longer-than-retrain",
            edit({"train.eval_every": "50it"}),  # round 0 is 60it, later rounds 40it
            "train.eval_every",
        ),
        C(
            "cross-drop-last-batch-beyond-data",
            edit({"train.drop_last": True, "train.batch_size": 5000}),
            ("train.drop_last", "train.batch_size"),
        ),
        C(
            "cross-layer-fraction-of-missing-type",
            edit(
                {**LAYERWISE, "model.arch": "lenet300_100", "prune.layer_fractions": {"conv": 0.1}}
            ),
            "prune.layer_fractions.conv",
        ),
        C(
            "cross-all-zero-fractions",
            edit({**LAYERWISE, "prune.layer_fractions": {"conv": 0.0, "fc": 0.0}}),
            "prune.layer_fractions",
        ),
        C("cross-device-cuda-without-gpu", edit({"train.device": "cuda"}), "train.device"),
        C(
            "cross-device-cuda-axis-without-gpu",
            edit({"train.device": "auto", "grid.train.device": ["cpu", "cuda"]}),
            "train.device",
        ),
    ],
)

LMC = "analysis.instability"


def lmc(**fields: Any) -> str:
    """smoke.yaml with an instability analysis, these of its fields changed."""
    return edit(
        {f"{LMC}.at": ["0it", "20it"], f"{LMC}.levels": [0, 1]}
        | {f"{LMC}.{k}": v for k, v in fields.items()}
    )


ANALYSIS = [
    *cases(
        "types",
        [
            C("types-lmc-at-number", lmc(at=[0, 100]), (f"{LMC}.at[0]", f"{LMC}.at")),
            C(
                "types-lmc-levels-word",
                lmc(levels=["dense"]),
                (f"{LMC}.levels[0]", f"{LMC}.levels"),
            ),
            C("types-lmc-pairs-float", lmc(pairs=1.5), f"{LMC}.pairs"),
            C("types-lmc-points-word", lmc(points="many"), f"{LMC}.points"),
            C("types-lmc-not-a-mapping", edit({"analysis": {"instability": [0, 1]}}), LMC),
        ],
    ),
    *cases(
        "ranges",
        [
            C("ranges-lmc-at-malformed", lmc(at=["100steps"]), f"{LMC}.at[0]"),
            C("ranges-lmc-at-beyond-round0", lmc(at=["5ep"]), f"{LMC}.at[0]"),
            C("ranges-lmc-level-beyond-rounds", lmc(levels=[0, 9]), f"{LMC}.levels[1]"),
            C("ranges-lmc-level-negative", lmc(levels=[-1]), f"{LMC}.levels[0]"),
            C("ranges-lmc-pairs-zero", lmc(pairs=0), f"{LMC}.pairs"),
            C("ranges-lmc-points-one", lmc(points=1), f"{LMC}.points"),
            C("ranges-lmc-threshold-points", lmc(threshold=2), f"{LMC}.threshold"),
            C("ranges-lmc-train-subset-zero", lmc(train_subset=0), f"{LMC}.train_subset"),
            C("ranges-level-wait-negative", edit({"tune.level_wait_s": -1}), "tune.level_wait_s"),
        ],
    ),
    *cases(
        "names",
        [
            C("names-lmc-unknown-field", lmc(pair=2), f"{LMC}.pair"),
            C("names-lmc-batchnorm", lmc(batchnorm="average"), f"{LMC}.batchnorm"),
            C(
                "names-analysis-unknown",
                edit({"analysis.connectivity": {}}),
                "analysis.connectivity",
            ),
        ],
    ),
    *cases(
        "cross",
        [
            C("cross-lmc-levels-without-at", edit({f"{LMC}.levels": [0, 2]}), f"{LMC}.at"),
            C("cross-lmc-repeated-at", lmc(at=["20it", "20it"]), f"{LMC}.at"),
            C("cross-lmc-at-beyond-retrain", lmc(at=["2ep"]), f"{LMC}.at[0]"),
            C(
                "cross-lmc-levels-without-tickets",
                edit({f"{LMC}.at": ["0it"], f"{LMC}.levels": [0, 1], "prune.schedule": "one_shot"}),
                f"{LMC}.levels",
            ),
        ],
    ),
]

CORPUS: list[Case] = [
    *TYPES,
    *RANGES,
    *RANGES_MORE,
    *NAMES,
    *NAMES_MORE,
    *STRUCTURE,
    *ENCODING,
    *SET,
    *SET_MORE,
    *CROSS,
    *CROSS_MORE,
    *DATA,
    *YAML,
    *SIZE,
    *MERGE,
    *ANALYSIS,
]


# ----------------------------------------------------------------------------------------------
# The tests.


def _names_field(err: str, fields: tuple[str, ...]) -> bool:
    """Whether `err` names one of `fields` as a whole path (`grid.seed` matches `grid.seed[2]`,
    `lr` does not match `train.lr`)."""
    return any(re.search(rf"(?<![\w.]){re.escape(f)}(?!\w)", err) for f in fields)


def run_dry(path: Path, extra: tuple[str, ...], capsys) -> tuple[int | str, str, str]:
    """rc (or what was raised instead), stdout, stderr of an in-process `sweep FILE --dry-run`."""
    try:
        rc: int | str = sweep.main([str(path), "--dry-run", *extra])
    except (Exception, SystemExit) as e:  # an escaped exception is a failure too
        rc = f"raised {type(e).__name__}: {e}"
    out, err = capsys.readouterr()
    return rc, out, err


def test_the_smoke_base_is_valid(tmp_path, capsys):
    """The cases are smoke.yaml with one thing wrong: smoke.yaml itself (also as `edit` writes it)
    must pass, so every failure below comes from that one thing."""
    for name, text in (("smoke.yaml", SMOKE_TEXT), ("dumped.yaml", edit({}))):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        rc, out, err = run_dry(path, (), capsys)
        assert rc == 0, f"{name}: rc {rc}\n{err}"


def test_the_corpus_covers_every_category():
    assert len(CORPUS) >= 110
    ids = [c.id for c in CORPUS]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    for category in CATEGORIES:
        n = sum(c.category == category for c in CORPUS)
        assert n >= 10, f"only {n} cases of category {category!r}"
    assert {c.category for c in CORPUS} == set(CATEGORIES)
    assert all(c.id.startswith(c.category) for c in CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_malformed_ablation_fails_cleanly(case: Case, tmp_path, capsys):
    path = tmp_path / f"{case.id}.yaml"
    if isinstance(case.text, bytes):
        path.write_bytes(case.text)
    else:
        path.write_text(case.text, encoding="utf-8")
    rc, out, err = run_dry(path, case.extra_args, capsys)
    tail = "\n".join((out + err).strip().splitlines()[-4:])

    assert "Traceback" not in out + err, f"a traceback:\n{tail}"
    assert rc == 2, f"expected exit code 2, got {rc}; output ends:\n{tail}"
    names = (str(path), str(path.resolve()))
    assert any(n in err for n in names), f"stderr does not name the file {path}:\n{err}"
    # The field must be named by the message itself, not by the file's name (which holds the id).
    message = err
    for n in (*names, str(tmp_path), str(tmp_path.resolve())):
        message = message.replace(n, "<path>")
    fields = case.field if isinstance(case.field, tuple) else (case.field,)
    assert _names_field(message, fields), f"stderr does not name the field {fields}:\n{err}"


# ----------------------------------------------------------------------------------------------
# Data roots that are the wrong kind of thing: caught by --dry-run, which reads the data on disk.


def _data_cases(tmp: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    a_file = tmp / "a_file.txt"
    a_file.write_text("not a dataset\n")
    fake_xz = tmp / "images.tar.xz"
    fake_xz.write_bytes(gzip.compress(b"a gzip, not an xz archive"))
    fake_zip = tmp / "images.zip"
    fake_zip.write_bytes(b"PK\x03\x04 not really")
    empty_dir = tmp / "empty"
    empty_dir.mkdir()
    folder = {"dataset": {"name": "image_folder", "root": "", "val_size": 100}}
    idx = {"dataset": {"name": "fashion_mnist", "root": "", "download": False, "val_size": 100}}
    cifar = {"dataset": {**_CIFAR["dataset"], "root": ""}}
    out = {}
    for name, base, root in (
        ("image-folder-root-is-a-file", folder, a_file),
        ("image-folder-archive-not-xz", folder, fake_xz),
        ("image-folder-archive-zip", folder, fake_zip),
        ("image-folder-empty-dir", folder, empty_dir),
        ("fashion-root-is-a-file", idx, a_file),
        ("fashion-empty-dir", idx, empty_dir),
        ("cifar-root-is-a-file", cifar, a_file),
        ("cifar-empty-dir", cifar, empty_dir),
    ):
        out[name] = (edit({"dataset": {**base["dataset"], "root": str(root)}}), ("dataset.root",))
    return out


_DATA_ROOT_CASES = [
    "image-folder-root-is-a-file",
    "image-folder-archive-not-xz",
    "image-folder-archive-zip",
    "image-folder-empty-dir",
    "fashion-root-is-a-file",
    "fashion-empty-dir",
    "cifar-root-is-a-file",
    "cifar-empty-dir",
]


@pytest.mark.parametrize("name", _DATA_ROOT_CASES)
def test_a_data_root_of_the_wrong_kind_fails_the_dry_run(name, tmp_path, capsys):
    text, fields = _data_cases(tmp_path)[name]
    path = tmp_path / f"data-{name}.yaml"
    path.write_text(text, encoding="utf-8")
    rc, out, err = run_dry(path, (), capsys)
    assert "Traceback" not in out + err
    assert rc == 2, f"expected exit code 2, got {rc}:\n{out}{err}"
    assert str(path) in err and _names_field(err.replace(str(path), "<path>"), fields), err


# ----------------------------------------------------------------------------------------------
# What must be accepted, and what is done with a word instead of a refusal.


@pytest.mark.parametrize(
    "text, extra",
    [
        (sub("lr: 2.0e-3", "lr: 1e-3"), ()),
        (sub("lr: 2.0e-3", "lr: 1E-3"), ()),
        (sub("lr: 2.0e-3", "lr: +1e-3"), ()),
        (sub("lr: 2.0e-3", "lr: 0.1e-2"), ()),
        (SMOKE_TEXT, ("--set", "train.lr=1e-3")),
        (SMOKE_TEXT, ("--set", "train.lr=.001")),
    ],
)
def test_floats_without_a_decimal_point_are_numbers(text, extra, tmp_path, capsys):
    path = tmp_path / "lr.yaml"
    path.write_text(text, encoding="utf-8")
    rc, out, err = run_dry(path, extra, capsys)
    assert rc == 0, err
    assert sweep.load_spec(sweep.parse_args([str(path), *extra])).train.lr == 0.001


def test_a_string_that_is_no_number_is_still_refused(tmp_path, capsys):
    for text, extra in (
        (sub("lr: 2.0e-3", "lr: 1e-3x"), ()),
        (SMOKE_TEXT, ("--set", "train.lr=1e")),
    ):
        path = tmp_path / "lr.yaml"
        path.write_text(text, encoding="utf-8")
        rc, out, err = run_dry(path, extra, capsys)
        assert rc == 2 and "train.lr" in err, err


def test_a_one_shot_baseline_of_one_shot_points_is_pointed_out(tmp_path, capsys):
    path = tmp_path / "oneshot.yaml"
    path.write_text(
        edit({"baselines.one_shot": True, "grid.prune.schedule": ["iterative", "one_shot"]}),
        encoding="utf-8",
    )
    rc, out, err = run_dry(path, (), capsys)
    assert rc == 0, err
    assert "note: baselines.one_shot adds no trial where 8 grid points are one-shot" in out
    assert "note: 8 one-shot baselines are not added" in out
    assert "smoke: 20 trials" in out  # 8 iterative + 8 one-shot points, 4 magnitude controls


@pytest.mark.parametrize(
    "changes, note",
    [
        ({"controls": {"criteria": ["magnitude"]}}, "no control kind (controls.kinds)"),
        ({"resources.gpu": 1}, "every trial trains on the CPU (train.device: cpu)"),
    ],
)
def test_what_is_accepted_with_a_note(changes, note, tmp_path, capsys):
    path = tmp_path / "noted.yaml"
    path.write_text(edit(changes), encoding="utf-8")
    rc, out, err = run_dry(path, (), capsys)
    assert rc == 0, err
    assert note in out


def test_size_caps_answer_fast_and_the_flag_raises_them(tmp_path, capsys):
    import time

    path = tmp_path / "big.yaml"
    path.write_text(edit({"controls.kinds": {"reinit": 10**9}}), encoding="utf-8")
    t0 = time.perf_counter()
    rc, out, err = run_dry(path, (), capsys)
    assert rc == 2 and time.perf_counter() - t0 < 2.0, err
    assert "10,000" in err and "--max-trials" in err
    path.write_text(edit({"grid.seed": list(range(30))}), encoding="utf-8")  # 150 trials
    assert run_dry(path, ("--max-trials", "100"), capsys)[0] == 2
    assert run_dry(path, ("--max-trials", "200"), capsys)[0] == 0
