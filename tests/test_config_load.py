from pathlib import Path

import pytest

from lth_ray.config.errors import ConfigError
from lth_ray.config.grid import expand_trials, trial_key
from lth_ray.config.load import load_ablation, trial_from_dict
from lth_ray.lottery.schedule import parse_rewind, parse_steps
from lth_ray.specs import field_docs

ABLATIONS = Path(__file__).resolve().parents[1] / "ablations"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "abl.yaml"
    p.write_text(text)
    return p


# The shipped ablations and their trial counts (the README's table states the same numbers).
SHIPPED = {
    "seed_study": 1,
    "smoke": 10,
    "criteria_conv4": 120,
    "rewind_conv4": 30,
    "frankle_carbin_conv": 90,
    "precision_study": 10,
    "fashion_lenet": 60,
    "open_lth_resnet20": 3,
    "open_lth_vgg16": 3,
    "lmc_resnet20": 72,
    "renda_resnet20": 9,
    "instability_fashion_lenet": 5,
    "instability_cifar_conv2": 5,
}


def test_every_shipped_ablation_is_counted():
    assert {p.stem for p in ABLATIONS.glob("*.yaml")} == set(SHIPPED)


# Planned epochs with shared work and without (the README states the same numbers).
EPOCHS = {
    "seed_study": (401, 401),
    "smoke": (66, 102),
    "criteria_conv4": (44_130, 63_120),
    "rewind_conv4": (10_930, 11_580),
    "frankle_carbin_conv": (60_000, 103_000),
    "precision_study": (260, 260),
    "fashion_lenet": (2_475, 3_540),
    "instability_fashion_lenet": (517, 1_837),
    "instability_cifar_conv2": (292, 652),
    "open_lth_resnet20": (5_865, 5_865),
    "open_lth_vgg16": (5_865, 5_865),
    "lmc_resnet20": (141_361, 246_699),
    "renda_resnet20": (16_017, 17_084),
}


@pytest.mark.parametrize(("name", "epochs"), EPOCHS.items())
def test_shipped_ablations_plan(name, epochs):
    from lth_ray.sweep.plan import build_plan

    spec = load_ablation(ABLATIONS / f"{name}.yaml")
    plan = build_plan(expand_trials(spec), instability=spec.analysis.instability)
    assert (round(plan.epochs), round(plan.unshared_epochs)) == epochs


@pytest.mark.parametrize(("name", "count"), SHIPPED.items())
def test_shipped_ablations_validate(name, count):
    spec = load_ablation(ABLATIONS / f"{name}.yaml")
    assert spec.name == name
    trials = expand_trials(spec)
    assert len(trials) == count
    assert len({t.key for t in trials}) == count


@pytest.mark.parametrize("name", ["open_lth_resnet20", "open_lth_vgg16"])
def test_open_lth_presets_are_its_defaults(name):
    t = expand_trials(load_ablation(ABLATIONS / f"{name}.yaml"))[0]
    tr = t.train
    assert (tr.optimizer, tr.lr, tr.momentum, tr.weight_decay, tr.batch_size) == (
        "sgd",
        0.1,
        0.9,
        1e-4,
        128,
    )
    # 160 epochs of 50,000 images at batch 128, x0.1 at 80 and 120 epochs
    assert (tr.initial, tr.retrain) == ("62560it", "62560it") and 62560 == 160 * 391
    assert tr.milestones == ["31280it", "46920it"] and tr.gamma == 0.1 and tr.warmup == "0it"
    assert t.dataset.augment == ["crop", "flip"] and t.dataset.scale == "imagenet"
    assert (t.model.init, t.model.bn_init) == ("kaiming_normal", "uniform")
    assert (t.prune.fraction, t.prune.scope, t.prune.rewind) == (0.2, "global", "init")
    assert t.prune.exclude == ([] if name.endswith("resnet20") else ["fc.weight"])


def test_lmc_and_renda_presets():
    lmc = expand_trials(load_ablation(ABLATIONS / "lmc_resnet20.yaml"))
    tickets = [t for t in lmc if t.prune.control == "none"]
    variants = {(t.train.lr, t.train.warmup) for t in tickets}
    assert variants == {(0.1, "0it"), (0.01, "0it"), (0.03, "30000it")}
    assert {t.prune.rewind for t in tickets} == {"init", "100it", "500it", "2000it"}
    assert {t.prune.control for t in lmc} == {"none", "reinit", "random_mask"}
    assert all(
        t.train.initial == "63000it" and t.train.milestones == ["32000it", "48000it"] for t in lmc
    )
    renda = expand_trials(load_ablation(ABLATIONS / "renda_resnet20.yaml"))
    assert {t.prune.retrain_mode for t in renda} == {"weight_rewind", "lr_rewind", "finetune"}
    assert {t.seed for t in renda} == {0, 1, 2} and all(t.prune.rewind == "2000it" for t in renda)


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
    # the study trained in fp32 with Keras' Adam (epsilon hat)
    assert (s.train.precision, s.train.eps_style) == ("fp32", "keras")
    assert len(expand_trials(s)) == 1


def test_frankle_carbin_protocol():
    s = load_ablation(ABLATIONS / "frankle_carbin_conv.yaml")
    assert (
        s.prune.scope == "layerwise" and s.prune.criterion == "magnitude" and s.prune.exclude == []
    )
    assert s.prune.layer_fractions == {"conv": 0.1, "fc": 0.2, "output": 0.1}
    assert (s.model.padding, s.model.init) == ("same", "glorot_normal")
    assert (s.train.precision, s.train.eps_style) == ("fp32", "keras")  # TF1, fp32
    assert s.controls.kinds == {"reinit": 3, "random_mask": 1} and s.baselines.one_shot
    nets = {}
    for t in expand_trials(s):
        nets[t.model.arch] = (t.train.lr, t.train.initial, t.train.retrain, t.prune.layer_fractions)
    assert nets == {
        "conv2": (2e-4, "20000it", "20000it", {"conv": 0.1, "fc": 0.2, "output": 0.1}),
        "conv4": (3e-4, "25000it", "25000it", {"conv": 0.1, "fc": 0.2, "output": 0.1}),
        "conv6": (3e-4, "30000it", "30000it", {"conv": 0.15, "fc": 0.2, "output": 0.1}),
    }


def test_criteria_grid_counts():
    trials = expand_trials(load_ablation(ABLATIONS / "criteria_conv4.yaml"))
    # 4 criteria x 5 seeds x 2 rates, iterative + one-shot + reinit controls
    assert len(trials) == 120
    keys = {trial_key(t) for t in trials}
    assert len(keys) == 120
    assert sum(t.prune.schedule == "one_shot" for t in trials) == 40
    assert sum(t.prune.control == "reinit" for t in trials) == 40
    assert {t.prune.fraction for t in trials} == {0.1, 0.2}
    grid = {(t.prune.criterion, t.seed, t.prune.fraction) for t in trials}
    assert len(grid) == 40  # every arm covers the same 40 grid points


def test_overrides_apply_and_are_typed(tmp_path):
    spec = load_ablation(
        ABLATIONS / "smoke.yaml", ["prune.rounds=7", "train.lr=0.01", "grid.seed=[3, 4]"]
    )
    assert spec.prune.rounds == 7 and spec.train.lr == 0.01 and spec.grid["seed"] == [3, 4]


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
        ("grid: {criteria: [magnitude, wrong]}", "grid.criteria[1]", "expected a criterion"),
        ("grid: {prune_rates: [0.1, 2]}", "grid.prune_rates[1]", "fraction"),
        ("grid: {prune.rewind: [init, 5xp]}", "grid.prune.rewind[1]", "'init', '<k>ep' or '<k>it'"),
        ("grid: {prune.rewnd: [init, 1ep]}", "grid.prune.rewnd", "did you mean 'prune.rewind'"),
        ("grid: {model.width: [0.5, -1]}", "grid.model.width[1]", "> 0"),
        ("grid: {seed: [0, 1, 0]}", "grid.seed[2]", "repeats grid.seed[0]"),
        ("grid: {seed: []}", "grid.seed", "non-empty list"),
        (
            "grid: {net: [{model.arch: conv2}, {model.arhc: conv4}]}",
            "grid.net[1].model.arhc",
            "did you mean 'model.arch'",
        ),
        (
            "grid: {net: [{model.arch: conv2}, {model.arch: vgg}]}",
            "grid.net[1].model.arch",
            "expected a model",
        ),
        ("grid: {seed: [0, 1], seeds: [2]}", "grid.seeds", "already an axis"),
        (
            "{train: {initial: 2ep}, grid: {prune.rewind: [init, 3ep]}}",
            "grid.prune.rewind[1]",
            "beyond round 0",
        ),
        ("controls: [reinit, shuffle]", "controls.shuffle", "reinit | random_mask"),
        ("controls: {kinds: {reinit: 0}}", "controls.reinit", "count >= 1"),
        (
            "controls: {kinds: [reinit], criteria: [magnitud]}",
            "controls.criteria[0]",
            "did you mean 'magnitude'",
        ),
        (
            "prune: {scope: global, layer_fractions: {conv: 0.1}}",
            "prune.layer_fractions",
            "layerwise",
        ),
        ("train: {lr: .inf}", "train.lr", "finite"),
        ("train: {weight_decay: -1}", "train.weight_decay", ">= 0"),
        ("resources: {gpu: -1}", "resources.gpu", ">= 0"),
        ("name: 'has space'", "name", "letters"),
    ],
)
def test_errors_name_file_and_field(tmp_path, text, field, expected):
    if "dataset" not in text:  # small synthetic data, so only the field under test is wrong
        data = "dataset: {name: synthetic, val_size: 200}"
        text = "{" + data + ", " + text[1:] if text.startswith("{") else data + "\n" + text
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
    with pytest.raises(ConfigError, match="empty"):
        load_ablation(write(tmp_path, "# nothing here\n"))
    with pytest.raises(ConfigError, match="written twice") as err:
        load_ablation(write(tmp_path, "prune: {rounds: 2}\nprune: {rounds: 3}\n"))
    assert err.value.field == "prune"
    with pytest.raises(ConfigError, match="written twice") as err:
        load_ablation(write(tmp_path, "train:\n  lr: 0.1\n  batch_size: 5\n  lr: 0.2\n"))
    assert err.value.field == "train.lr" and "lines 2 and 4" in err.value.message
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_ablation(bad)


def test_bad_override_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="key.path=value"):
        load_ablation(ABLATIONS / "smoke.yaml", ["prune.rounds"])


def test_bad_override_value_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_ablation(ABLATIONS / "smoke.yaml", ["train.lr=[1, 2"])
    assert err.value.field == "train.lr"


def test_override_of_a_dotted_grid_axis():
    spec = load_ablation(ABLATIONS / "smoke.yaml", ["grid.prune.rewind=[init, 1ep]"])
    assert len(expand_trials(spec)) == 20


def test_trial_config_roundtrip():
    trial = expand_trials(load_ablation(ABLATIONS / "criteria_conv4.yaml"))[37]
    again = trial_from_dict(trial.to_dict())
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
