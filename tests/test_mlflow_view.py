"""The experiment kind a sweep leaves on its MLflow experiment (model training, not GenAI)."""

import pytest
from mlflow import MlflowClient

from lth_ray.sweep.tracking import (
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_KIND_TRAINING,
    prepare_sweep,
)


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def sweep(uri: str, ablation: str = "abl"):
    return prepare_sweep(uri, ablation, "s1", "a test sweep", {"seed": 0}, n_trials=2)


def kind(uri: str, experiment_id: str) -> str | None:
    return MlflowClient(uri).get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG)


def test_new_experiment_is_model_training(store):
    ctx = sweep(store)
    assert kind(store, ctx.experiment_id) == EXPERIMENT_KIND_TRAINING


def test_existing_experiment_without_kind_gets_it(store):
    exp_id = MlflowClient(store).create_experiment("abl")
    assert kind(store, exp_id) is None
    ctx = sweep(store)
    assert ctx.experiment_id == exp_id
    assert kind(store, exp_id) == EXPERIMENT_KIND_TRAINING


@pytest.mark.parametrize("guess", ["no_inferred_type", "genai_development_inferred", ""])
def test_a_guessed_kind_is_replaced(store, guess):
    client = MlflowClient(store)
    exp_id = client.create_experiment("abl")
    client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, guess)
    sweep(store)
    assert kind(store, exp_id) == EXPERIMENT_KIND_TRAINING


@pytest.mark.parametrize("chosen", ["genai_development", "finetuning"])
def test_a_kind_someone_chose_is_kept(store, chosen):
    client = MlflowClient(store)
    exp_id = client.create_experiment("abl", tags={EXPERIMENT_KIND_TAG: chosen})
    ctx = sweep(store)
    assert ctx.experiment_id == exp_id
    assert kind(store, exp_id) == chosen


def test_second_sweep_keeps_the_kind_and_adds_a_parent_run(store):
    first, second = sweep(store), sweep(store)
    assert first.experiment_id == second.experiment_id
    assert first.parent_run_id != second.parent_run_id
    assert kind(store, first.experiment_id) == EXPERIMENT_KIND_TRAINING
