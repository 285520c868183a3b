from pathlib import Path

import pytest

from lth_ray.config import (
    ConfigError,
    TrialConfig,
    expand_trials,
    field_docs,
    load_ablation,
    parse_rewind,
    parse_steps,
    trial_key,
)

ABLATIONS = Path(__file__).resolve().parents[1] / "ablations"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "abl.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["seed_study", "frankle_carbin_conv4", "criteria_conv4", "smoke"])
def test_shipped_ablations_validate(name):
    spec = load_ablation(ABLATIONS / f"{name}.yaml")
    assert spec.name == name
    assert expand_trials(spec)


def test_seed_study_is_the_study_protocol():
    s = load_ablation(ABLATIONS / "seed_study.yaml")
    assert (s.model.arch, s.model.padding, s.model.init) == ("conv4", "valid", "glorot_uniform")
    assert (s.train.optimizer, s.train.lr, s.train.eps, s.train.batch_size) == (
        "adam",
        3e-4,
        1e-7,
        60,
    )
    assert (s.train.initial, s.train.retrain) == ("26ep", "25ep")
    assert (s.prune.criterion, s.prune.fraction, s.prune.scope, s.prune.rounds) == (
        "stability",
        0.1,
        "global",
        15,
    )
    assert (
        s.prune.exclude == ["output"]
        and s.prune.rewind == "init"
        and s.prune.schedule == "iterative"
    )
    assert (s.dataset.val_size, s.dataset.scale) == (5000, "unit")
    assert len(expand_trials(s)) == 1


def test_frankle_carbin_protocol():
    s = load_ablation(ABLATIONS / "frankle_carbin_conv4.yaml")
    assert (
        s.prune.scope == "layerwise" and s.prune.criterion == "magnitude" and s.prune.exclude == []
    )
    assert s.prune.layer_fractions == {"conv": 0.1, "fc": 0.2, "output": 0.1}
    assert (s.model.padding, s.model.init, s.train.initial) == ("same", "glorot_normal", "25000it")


def test_criteria_grid_counts():
    trials = expand_trials(load_ablation(ABLATIONS / "criteria_conv4.yaml"))
    # 4 criteria x 5 seeds x 2 rates, iterative + one-shot + reinit controls
    assert len(trials) == 120
    keys = {trial_key(t) for t in trials}
    assert len(keys) == 120
    assert sum(t.prune.schedule == "one_shot" for t in trials) == 40
    assert sum(t.prune.control == "reinit" for t in trials) == 40
    assert {t.prune.fraction for t in trials} == {0.1, 0.2}


def test_overrides_apply_and_are_typed(tmp_path):
    spec = load_ablation(
        ABLATIONS / "smoke.yaml", ["prune.rounds=7", "train.lr=0.01", "grid.seeds=[3, 4]"]
    )
    assert spec.prune.rounds == 7 and spec.train.lr == 0.01 and spec.grid.seeds == [3, 4]


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("prune: {fractoin: 0.1}", "prune.fractoin", "did you mean 'fraction'"),
        ("prune: {fraction: 1.5}", "prune.fraction", "fraction in (0, 1)"),
        ("prune: {scope: local}", "prune.scope", "'global' | 'layerwise'"),
        ("prune: {criterion: nope}", "prune.criterion", "stability"),
        ("prune: {rounds: three}", "prune.rounds", "an integer"),
        ("prune: {rewind: halfway}", "prune.rewind", "'init'"),
        ("prune: {rewind: 30ep}", "prune.rewind", "beyond round 0"),
        (
            "prune: {layer_fractions: {attention: 0.1}}",
            "prune.layer_fractions.attention",
            "conv, fc or output",
        ),
        ("train: {initial: 26 epochs}", "train.initial", "'<n>ep' or '<n>it'"),
        ("train: {batch_size: 0}", "train.batch_size", ">= 1"),
        ("train: {download: true}", "train.download", "unknown field"),
        ("dataset: {name: imagenet}", "dataset.name", "cifar10"),
        ("dataset: {download: maybe}", "dataset.download", "true or false"),
        ("model: {arch: resnet}", "model.arch", "conv4"),
        ("grid: {criteria: [magnitude, wrong]}", "grid.criteria[1]", "expected one of"),
        ("grid: {prune_rates: [0.1, 2]}", "grid.prune_rates[1]", "fraction"),
        ("resources: {gpu: -1}", "resources.gpu", ">= 0"),
        ("name: 'has space'", "name", "letters"),
    ],
)
def test_errors_name_file_and_field(tmp_path, text, field, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_ablation(path)
    assert err.value.field == field
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_ablation(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_ablation(write(tmp_path, "prune: [unclosed"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_ablation(write(tmp_path, "- a\n- b\n"))


def test_bad_override_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="key.path=value"):
        load_ablation(ABLATIONS / "smoke.yaml", ["prune.rounds"])


def test_trial_config_roundtrip():
    trial = expand_trials(load_ablation(ABLATIONS / "criteria_conv4.yaml"))[37]
    again = TrialConfig.from_dict(trial.to_dict())
    assert again == trial


def test_steps_parsing():
    assert parse_steps("26ep") == (26, "ep") and parse_steps("25000it") == (25000, "it")
    assert parse_rewind("init") is None and parse_rewind("2ep") == (2, "ep")
    with pytest.raises(ValueError):
        parse_steps("26")


def test_every_field_has_a_doc():
    rows = field_docs()
    assert len(rows) > 40
    assert all(doc for _, _, doc in rows), [path for path, _, doc in rows if not doc]
