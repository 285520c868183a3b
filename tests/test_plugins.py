"""Users' own models, datasets and criteria: an ablation's `plugins:`, the public registries and
the Python API (`run_sweep`)."""

from __future__ import annotations

from pathlib import Path

import pytest

import lth_ray
from lth_ray.config.errors import ConfigError
from lth_ray.config.load import load_ablation
from lth_ray.sweep import cli as sweep
from tests.test_sweep import workdir  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_ablation.yaml"
PLUGIN = ROOT / "examples" / "plugins" / "tiny_lab.py"


def ablation_with(tmp_path: Path, plugins: str, extra: str = "") -> Path:
    """The example ablation with another `plugins:` line, written beside the test's files."""
    text = EXAMPLE.read_text().replace("plugins: [plugins/tiny_lab.py]", f"plugins: {plugins}")
    path = tmp_path / "abl.yaml"
    path.write_text(text + extra)
    return path


def dry_run(path: Path, capsys) -> tuple[int, str]:
    rc = sweep.main([str(path), "--dry-run"])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_the_registries_are_the_packages_public_api():
    from lth_ray.lottery.datasets import DATASETS
    from lth_ray.lottery.models import MODELS
    from lth_ray.lottery.pruning import CRITERIA

    assert lth_ray.MODELS is MODELS and lth_ray.DATASETS is DATASETS
    assert lth_ray.CRITERIA is CRITERIA
    assert callable(lth_ray.load_ablation) and callable(lth_ray.run_sweep)
    assert callable(lth_ray.build_report)
    with pytest.raises(AttributeError):
        lth_ray.no_such_name  # noqa: B018


def test_the_example_plugin_registers_its_names_before_validation(capsys):
    rc, text = dry_run(EXAMPLE, capsys)
    assert rc == 0, text
    assert "magnitude_times_movement-s0-reinit" in text and "6 trials" in text
    assert {"tiny_mlp"} <= set(lth_ray.MODELS.names())
    assert "rings" in lth_ray.DATASETS and "magnitude_times_movement" in lth_ray.CRITERIA
    load_ablation(EXAMPLE)  # importing the plugin again in one process registers nothing twice


def test_did_you_mean_knows_a_plugins_names(tmp_path, capsys):
    path = ablation_with(tmp_path, f"[{PLUGIN}]")
    path.write_text(path.read_text().replace("arch: tiny_mlp", "arch: tiny_mpl"))
    rc, text = dry_run(path, capsys)
    assert rc == 2 and "model.arch" in text and "did you mean 'tiny_mlp'" in text


@pytest.mark.parametrize(
    "plugin_code,expected",
    [
        ("raise RuntimeError('no GPU driver here')", "RuntimeError: no GPU driver here"),
        ("import not_a_module_anywhere", "No module named 'not_a_module_anywhere'"),
        ("def broken(:\n    pass", "SyntaxError"),
        (
            "from lth_ray import MODELS\n@MODELS.register('conv4')\ndef conv4(*a):\n    pass",
            "model 'conv4' is already registered",
        ),
    ],
    ids=["raises", "imports-missing", "syntax-error", "registers-twice"],
)
def test_a_broken_plugin_is_a_clear_error_before_ray(tmp_path, capsys, plugin_code, expected):
    (tmp_path / "bad.py").write_text(plugin_code + "\n")
    path = ablation_with(tmp_path, f"[{PLUGIN}, bad.py]")
    rc, text = dry_run(path, capsys)
    assert rc == 2, text
    assert str(path) in text and "plugins[1]" in text and "'bad.py'" in text and expected in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    "plugins,expected",
    [
        ("[missing.py]", "does not exist"),
        ("['not a module']", "expected a module name"),
        ("[no_such_lab.nets]", "No module named 'no_such_lab'"),
    ],
)
def test_a_plugin_that_cannot_be_found_names_the_entry(tmp_path, capsys, plugins, expected):
    rc, text = dry_run(ablation_with(tmp_path, plugins), capsys)
    assert rc == 2 and "plugins[0]" in text and expected in text and "Traceback" not in text


def test_a_plugin_sweep_runs_on_local_ray_from_the_python_api(workdir):  # noqa: F811
    """Ray workers import the plugin themselves: the trials build its model, read its data and
    prune with its criterion; `run_sweep` returns the sweep's id and its report folder."""
    from mlflow import MlflowClient

    overrides = ["prune.rounds=1", "train.initial=1ep", "dataset.synthetic_train=300"]
    result = lth_ray.run_sweep(EXAMPLE, overrides, num_cpus=2, tracking_uri="sqlite:///p.db")
    assert result.report_dir is not None and (result.report_dir / "trials.csv").is_file()
    client = MlflowClient(result.tracking_uri)
    exp = client.get_experiment_by_name("plugin_demo")
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`lth_ray.sweep` = '{result.sweep_id}' and tags.`lth_ray.role` = 'trial'",
    )
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["criterion"] for r in runs} == {"magnitude_times_movement", "magnitude"}
    assert all(r.data.params["model.arch"] == "tiny_mlp" for r in runs)


def test_the_python_api_refuses_a_malformed_ablation_before_ray(workdir):  # noqa: F811
    with pytest.raises(ConfigError, match="prune.rounds"):
        lth_ray.run_sweep(EXAMPLE, ["prune.rounds=-1"])
    import ray

    assert not ray.is_initialized()
