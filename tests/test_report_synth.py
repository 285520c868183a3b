"""Helpers that fill an MLflow sqlite store with sweeps of known values, laid out as lth_ray.schema
says the sweep writes them (imported by the other test_report_* files), plus checks of the helper."""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from lth_ray import schema

NUM_CLASSES = 10
_TEMPLATE: list[Path] = []


def store_uri(folder: Path) -> str:
    """A fresh sqlite store in `folder`, copied from a once-migrated template (migrations take ~2 s)."""
    if not _TEMPLATE:
        tmp = Path(tempfile.mkdtemp(prefix="lth_report_tpl_"))
        atexit.register(shutil.rmtree, tmp, True)
        MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}").search_experiments()
        _TEMPLATE.append(tmp / "mlflow.db")
    shutil.copy(_TEMPLATE[0], folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def weights_remaining(rate: float, rounds: int) -> list[float]:
    return [100.0 * (1 - rate) ** r for r in range(rounds)]


@dataclass
class Trial:
    criterion: str
    seed: int
    acc: list[float]  # test accuracy (fraction) per logged round
    best_epoch: list[float] | None = None
    prune_rate: float = 0.2
    schedule: str = "iterative"
    control: str = "none"
    status: str = "FINISHED"
    rounds_total: int | None = None  # default: len(acc)
    num_classes: int | None = NUM_CLASSES
    extra: dict[str, list[float]] = field(default_factory=dict)
    only: tuple[str, ...] | None = None  # log just these metrics (fast bulk fixtures)

    @property
    def key(self) -> str:
        return f"{self.criterion}-s{self.seed}-p{self.prune_rate:g}-{self.schedule}-{self.control}"


def trial_metrics(t: Trial) -> list[Metric]:
    n = len(t.acc)
    wr = weights_remaining(t.prune_rate, n)
    epochs = t.best_epoch or [5.0] * n
    per_round = {
        "test_acc": t.acc,
        "weights_remaining": wr,
        "sparsity": [1 - w / 100 for w in wr],
        "test_loss": [2.0 - a for a in t.acc],
        "best_epoch": epochs,
        "val_loss_best": [1.5 - a for a in t.acc],
        "skipped": [0.0] * n,
        **t.extra,
    }
    return [
        Metric(key, float(v), 1_000 + step, step)
        for key, values in per_round.items()
        if t.only is None or key in t.only
        for step, v in enumerate(values)
    ]


def trial_tags(t: Trial, common: dict[str, str], parent: str) -> dict[str, str]:
    tags = {
        **common,
        schema.TAG_ROLE: schema.ROLE_TRIAL,
        schema.MLFLOW_PARENT: parent,
        schema.TAG_TRIAL: t.key,
        schema.TAG_CRITERION: t.criterion,
        schema.TAG_SEED: str(t.seed),
        schema.TAG_PRUNE_RATE: f"{t.prune_rate:g}",
        schema.TAG_SCHEDULE: t.schedule,
        schema.TAG_CONTROL: t.control,
        schema.TAG_ROUNDS_TOTAL: str(t.rounds_total or len(t.acc)),
        schema.TAG_ROUNDS_DONE: str(len(t.acc)),
    }
    if t.num_classes is not None:
        tags[schema.TAG_NUM_CLASSES] = str(t.num_classes)
    return tags


def log_sweep(
    uri: str,
    experiment: str,
    sweep: str,
    trials: list[Trial],
    start_time: int = 1_000,
    bulk_insert: bool = False,
) -> str:
    """A parent run tagged as a sweep and one nested child per trial; returns the parent's run id.

    bulk_insert: write the child runs, tags and metrics with a few executemany through MLflow's own
    table models instead of the client (create_run + log_batch cost ~15 ms a run: a 200-run fixture
    would take seconds). The report reads them back through the client, so a wrong row fails loudly.
    """
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    common = {schema.TAG_SWEEP: sweep, schema.TAG_ABLATION: experiment}
    parent = client.create_run(
        exp_id, start_time=start_time, tags={**common, schema.TAG_ROLE: schema.ROLE_SWEEP}
    )
    pid = parent.info.run_id
    if bulk_insert:
        _insert_trials(uri, int(exp_id), pid, common, trials, start_time + 1)
    else:
        for t in trials:
            run = client.create_run(
                exp_id, start_time=start_time + 1, tags=trial_tags(t, common, pid)
            )
            if t.acc:
                client.log_batch(run.info.run_id, metrics=trial_metrics(t))
            if t.status != "RUNNING":
                client.set_terminated(run.info.run_id, status=t.status)
    client.set_terminated(pid)
    return pid


def _insert_trials(
    uri: str, exp_id: int, parent: str, common: dict, trials: list[Trial], start: int
) -> None:
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag

    runs, tags, metrics, latest = [], [], [], {}
    for t in trials:
        rid = uuid.uuid4().hex
        runs.append(
            {
                "run_uuid": rid,
                "name": t.key,
                "status": t.status,
                "start_time": start,
                "user_id": "test",
                "end_time": None if t.status == "RUNNING" else start + 1,
                "lifecycle_stage": "active",
                "experiment_id": exp_id,
                "artifact_uri": f"mlflow-artifacts:/{rid}",
            }
        )
        tags += [
            {"run_uuid": rid, "key": k, "value": v}
            for k, v in trial_tags(t, common, parent).items()
        ]
        for m in trial_metrics(t):
            row = {
                "run_uuid": rid,
                "key": m.key,
                "value": 0.0 if math.isnan(m.value) else m.value,
                "is_nan": math.isnan(m.value),
                "timestamp": m.timestamp,
                "step": m.step,
            }
            metrics.append(row)
            if (rid, m.key) not in latest or m.step >= latest[rid, m.key]["step"]:
                latest[rid, m.key] = row  # MLflow keeps the value of the largest step
    engine = sa.create_engine(uri)
    with engine.begin() as conn:
        conn.execute(SqlRun.__table__.insert(), runs)
        conn.execute(SqlTag.__table__.insert(), tags)
        if metrics:
            conn.execute(SqlMetric.__table__.insert(), metrics)
            conn.execute(SqlLatestMetric.__table__.insert(), list(latest.values()))
    engine.dispose()


@pytest.mark.parametrize("bulk", [False, True])
def test_store_holds_the_logged_layout(tmp_path, bulk):
    uri = store_uri(tmp_path)
    t = Trial("magnitude", 3, [0.7, 0.6], best_epoch=[4, 6], status="KILLED", rounds_total=5)
    log_sweep(uri, "abl", "sw", [t], bulk_insert=bulk)
    c = MlflowClient(uri)
    (run,) = c.search_runs(
        [c.get_experiment_by_name("abl").experiment_id], "tags.`lth_ray.role` = 'trial'"
    )
    assert run.info.status == "KILLED"
    assert run.data.tags[schema.TAG_TRIAL] == "magnitude-s3-p0.2-iterative-none"
    assert run.data.tags[schema.TAG_ROUNDS_TOTAL] == "5"
    assert (
        run.data.tags[schema.MLFLOW_PARENT]
        == c.search_runs([run.info.experiment_id], "tags.`lth_ray.role` = 'sweep'")[0].info.run_id
    )
    assert run.data.metrics["test_acc"] == pytest.approx(0.6)  # latest = last round
    hist = c.get_metric_history(run.info.run_id, "weights_remaining")
    assert [(m.step, round(m.value, 6)) for m in hist] == [(0, 100.0), (1, 80.0)]
