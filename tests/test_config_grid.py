"""The general grid: axes of any field, bundles, arms, trial keys and tags."""

from pathlib import Path

import pytest

from lth_ray.config.errors import ConfigError
from lth_ray.config.grid import arm_of, expand_trials, label, varying_fields
from lth_ray.config.load import load_ablation

ABLATIONS = Path(__file__).resolve().parents[1] / "ablations"


def load(tmp_path: Path, text: str):
    p = tmp_path / "abl.yaml"
    p.write_text(text)
    return load_ablation(p)


SMALL = """
name: g
dataset: {name: synthetic, val_size: 200}
model: {arch: conv2, width: 0.125}
train: {initial: 2ep, retrain: 2ep, device: cpu}
prune: {rounds: 1}
"""


def test_any_field_is_an_axis(tmp_path):
    spec = load(
        tmp_path,
        SMALL + "grid: {prune.rewind: [init, 1ep], model.width: [0.125, 0.25], seed: [0, 1]}\n",
    )
    trials = expand_trials(spec)
    assert len(trials) == 8
    assert len({t.key for t in trials}) == 8
    points = {(t.prune.rewind, t.model.width, t.seed) for t in trials}
    assert len(points) == 8
    t = next(t for t in trials if t.prune.rewind == "1ep" and t.model.width == 0.25 and t.seed == 1)
    assert t.key == "magnitude-s1-rw1ep-w0.25"
    assert t.axes == {"prune.rewind": "1ep", "model.width": "0.25", "seed": "1"}
    assert varying_fields(trials) == ["prune.rewind", "model.width", "seed"]


def test_bundle_moves_fields_together_and_labels_by_what_differs(tmp_path):
    spec = load(
        tmp_path,
        SMALL
        + """
grid:
  net:
    - {model.arch: conv2, train.lr: 2.0e-4}
    - {model.arch: conv4, train.lr: 3.0e-4, prune.rewind: 1ep}
    - {label: wide4, model.arch: conv4, train.lr: 3.0e-4, model.width: 0.25}
""",
    )
    trials = expand_trials(spec)
    assert [(t.model.arch, t.train.lr, t.prune.rewind, t.model.width) for t in trials] == [
        ("conv2", 2e-4, "init", 0.125),
        ("conv4", 3e-4, "1ep", 0.125),
        ("conv4", 3e-4, "init", 0.25),
    ]
    assert [t.key for t in trials] == [
        "magnitude-s0-conv2",
        "magnitude-s0-conv4",
        "magnitude-s0-wide4",
    ]
    # every field the bundle touches is a varying field (with the base value where unset)
    assert trials[0].axes == {
        "model.arch": "conv2",
        "train.lr": "0.0002",
        "prune.rewind": "init",
        "model.width": "0.125",
    }


def test_arms_one_shot_and_repeated_controls(tmp_path):
    spec = load(
        tmp_path,
        SMALL
        + """
grid: {prune.criterion: [magnitude, random], seed: [0, 1]}
baselines: {one_shot: true}
controls: {kinds: {reinit: 2, random_mask: 1}, criteria: [magnitude]}
""",
    )
    trials = expand_trials(spec)
    arms = [arm_of(t) for t in trials]
    assert arms.count("ticket") == 4 and arms.count("one_shot") == 4
    assert arms.count("reinit") == 2 and arms.count("reinit#1") == 2
    assert arms.count("random_mask") == 2
    assert {t.prune.criterion for t in trials if t.prune.control != "none"} == {"magnitude"}
    keys = {t.key for t in trials}
    assert len(keys) == len(trials) == 14
    assert {"magnitude-s1-oneshot", "magnitude-s1-reinit1", "magnitude-s0-rmask"} <= keys
    assert "arm" in varying_fields(trials)


def test_controls_list_shorthand_covers_every_criterion(tmp_path):
    spec = load(
        tmp_path, SMALL + "grid: {criteria: [magnitude, random]}\ncontrols: [random_mask]\n"
    )
    trials = expand_trials(spec)
    assert sorted(t.key for t in trials) == [
        "magnitude-s0",
        "magnitude-s0-rmask",
        "random-s0",
        "random-s0-rmask",
    ]


def test_old_shorthands_expand_like_the_dotted_axes(tmp_path):
    old = load(
        tmp_path,
        SMALL
        + "grid: {criteria: [magnitude, stability], seeds: [0, 1], prune_rates: [0.1, 0.2]}\n"
        + "baselines: {reinit: [stability]}\n",
    )
    new = load(
        tmp_path,
        SMALL
        + "grid: {prune.criterion: [magnitude, stability], seed: [0, 1], prune.fraction: [0.1, 0.2]}\n"
        + "controls: {kinds: [reinit], criteria: [stability]}\n",
    )
    assert [t.to_dict() for t in expand_trials(old)] == [t.to_dict() for t in expand_trials(new)]


def test_identical_trials_are_kept_once(tmp_path):
    # one_shot as a base schedule and as a baseline arm are the same trial
    text = SMALL.replace("prune: {rounds: 1}", "prune: {rounds: 1, schedule: one_shot}")
    spec = load(tmp_path, text + "baselines: {one_shot: true}\n")
    assert len(expand_trials(spec)) == 1


def test_combinations_are_checked_together(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(
            tmp_path,
            SMALL.replace("prune: {rounds: 1}", "prune: {rounds: 1, rewind_budget: full}")
            + "grid: {train.initial: [1ep, 3ep], prune.rewind: [init, 2ep]}\n",
        )
    assert err.value.field == "grid"
    assert "rewind point '2ep' lies beyond" in err.value.message
    assert "rw2ep" in err.value.message  # names the offending trial


def test_labels_are_short_and_folder_safe():
    assert label("prune.fraction", 0.2) == "p0.2"
    assert label("model.arch", "conv6") == "conv6"
    assert label("train.betas", [0.9, 0.99]) == "betas0.9x0.99"
    assert label("dataset.root", "a/b c") == "roota_b_c"


def test_shipped_general_grids():
    rewind = expand_trials(load_ablation(ABLATIONS / "rewind_conv4.yaml"))
    assert {(t.prune.criterion, t.prune.rewind) for t in rewind} == {
        (c, r) for c in ("magnitude", "stability") for r in ("init", "1ep", "2ep")
    }
    precision = expand_trials(load_ablation(ABLATIONS / "precision_study.yaml"))
    assert {t.train.precision for t in precision} == {"fp32", "bf16"}
    assert all(t.prune.rounds == 0 for t in precision)


def test_a_rate_axis_that_no_layer_uses_is_refused(tmp_path):
    text = SMALL.replace(
        "prune: {rounds: 1}",
        "prune: {rounds: 1, scope: layerwise, exclude: [], layer_fractions: {conv: 0.1, fc: 0.2, output: 0.1}}",
    )
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text + "grid: {prune.fraction: [0.1, 0.2]}\n")
    assert err.value.field == "grid.prune.fraction" and "never used" in err.value.message
    # with the output layer excluded and only conv given, fc still prunes at prune.fraction
    ok = SMALL.replace(
        "prune: {rounds: 1}", "prune: {rounds: 1, scope: layerwise, layer_fractions: {conv: 0.1}}"
    )
    assert len(expand_trials(load(tmp_path, ok + "grid: {prune.fraction: [0.1, 0.2]}\n"))) == 2


def test_long_trial_keys_are_shortened_and_stay_distinct(tmp_path):
    labels = ["a" * 90, "b" * 90]
    text = SMALL + (
        "grid:\n  net:\n"
        f"    - {{train.lr: 1.0e-3, label: {labels[0]}}}\n"
        f"    - {{train.lr: 2.0e-3, label: {labels[1]}}}\n"
        "  opt:\n"
        f"    - {{train.weight_decay: 0.0, label: {'c' * 90}}}\n"
        f"    - {{train.weight_decay: 0.1, label: {'d' * 90}}}\n"
    )
    trials = expand_trials(load(tmp_path, text))
    keys = [t.key for t in trials]
    assert len(keys) == len(set(keys)) == 4
    assert all(len(k) <= 160 for k in keys), [len(k) for k in keys]
