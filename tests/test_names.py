"""Names that become folders are slugs; values in MLflow filters are quoted; URIs are redacted."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from lth_ray import names, schema
from lth_ray.sweep import tracking


@pytest.mark.parametrize("good", ["smoke", "criteria_conv4", "a", "v1.2-b", "x" * names.SLUG_MAX])
def test_slugs_that_are_accepted(good):
    assert names.slug_problem(good) is None


@pytest.mark.parametrize(
    "bad",
    [
        ".",
        "..",
        "../up",
        "a/b",
        "a\\b",
        "smoke\n",
        "",
        " smoke",
        "-rf",
        ".hidden",
        "x" * 101,
        "naïve",
        "x'y",
        "a b",
        7,
        None,
    ],
)
def test_slugs_that_are_refused_say_what_is_allowed(bad):
    problem = names.slug_problem(bad)
    assert problem is not None and "letters, digits" in problem
    assert len(problem) < 200  # a 300-character name is not echoed whole


def test_values_in_mlflow_filters_are_quoted(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e")
    awkward = ["x'y", "a\\'b", "' or tags.x = 'y", 'q"uote', "back\\slash", "x''y"]
    for value in awkward:
        run = client.create_run(exp, tags={schema.TAG_SWEEP: value})
        client.set_terminated(run.info.run_id)
    client.create_run(exp, tags={schema.TAG_SWEEP: "other"})
    for value in awkward:
        found = client.search_runs([exp], names.tag_equals(schema.TAG_SWEEP, value))
        assert [r.data.tags[schema.TAG_SWEEP] for r in found] == [value]
    with pytest.raises(ValueError, match="both kinds of quote"):
        names.tag_equals(schema.TAG_SWEEP, 'it\'s "odd"')


def test_resume_lookup_of_an_odd_sweep_id_raises_no_mlflow_error(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("smoke")
    assert tracking.find_sweep(uri, "smoke", "x'y") is None


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("https://alice:s3cret@mlflow.example:5000", "https://alice:***@mlflow.example:5000"),
        ("https://tok3n@mlflow.example", "https://***@mlflow.example"),
        ("http://h:5000/?token=abc&x=1", "http://h:5000/?token=***&x=1"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("ray_results", "ray_results"),
    ],
)
def test_credentials_in_uris_are_redacted(uri, shown):
    assert names.redact_uri(uri) == shown


def test_a_recorded_command_line_shows_no_credentials():
    argv = [
        "a.yaml",
        "--tracking-uri",
        "https://alice:s3cret@mlflow.example",
        "--storage=s3://AKIA:wJalr@bucket/x",
        "--set",
        "train.lr=1e-3",
    ]
    line = " ".join(names.redact_argv(argv))
    assert "s3cret" not in line and "wJalr" not in line
    assert "alice:***@mlflow.example" in line and "train.lr=1e-3" in line
