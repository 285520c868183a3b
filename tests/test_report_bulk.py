"""Bulk metric pulls: a 200-run sweep is read in one SQL query, or 2 REST calls per metric, never
one get_metric_history call per run (calls counted with spies, not timed)."""

from __future__ import annotations

import math
import re
from unittest import mock

import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from lth_ray import schema
from lth_ray.report import mlflow_io as io
from lth_ray.report.mlflow_io import ClientMetricReader, SqlMetricReader, load_sweep, read_metrics
from tests.test_report_synth import Trial, log_sweep, store_uri

N_RUNS, N_ROUNDS = 200, 16
KEYS = ("test_acc", "weights_remaining", "best_epoch", "test_loss")
SORT = ["run_id", "key", "step"]


def _acc(i: int, r: int) -> float:
    return 0.5 + 0.001 * i + 0.01 * r


@pytest.fixture(scope="module")
def big_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bulk")
    uri = store_uri(folder)
    trials = []
    for i in range(N_RUNS):
        t = Trial(f"c{i % 4}", i, [_acc(i, r) for r in range(N_ROUNDS)], only=KEYS)
        if i == 0:  # a NaN must survive every reader
            t.extra = {"test_loss": [math.nan if r == 3 else 1.0 for r in range(N_ROUNDS)]}
        trials.append(t)
    log_sweep(uri, "bulk", "big", trials, bulk_insert=True)
    client = MlflowClient(uri)
    ref = io.find_sweep(client, "bulk", "big")
    return uri, client, io.trial_runs(client, ref)


class MetricsQueries:
    """Spy on every SQL statement any SQLAlchemy engine sends that reads the `metrics` table."""

    pattern = re.compile(r"\bFROM\s+metrics\b", re.IGNORECASE)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, conn, cursor, statement, *args) -> None:
        self.count += bool(self.pattern.search(statement))

    def __enter__(self):
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc) -> None:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", self)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(SORT).reset_index(drop=True)


def test_sql_store_reads_the_whole_sweep_in_one_query(big_sweep):
    uri, _, _ = big_sweep
    per_run = mock.Mock(side_effect=AssertionError("per-run metric history call"))
    with MetricsQueries() as spy, mock.patch.object(MlflowClient, "get_metric_history", per_run):
        data = load_sweep(uri, "bulk", "big")
    assert spy.count == 1
    assert per_run.call_count == 0
    assert data.reader == "sql"
    t = data.trials
    assert len(t) == N_RUNS * N_ROUNDS and (t["status"] == "complete").all()
    row = t[(t["seed"] == 137) & (t["round"] == 9)].iloc[0]
    assert row["test_acc"] == pytest.approx(_acc(137, 9))
    assert row["weights_remaining"] == pytest.approx(100 * 0.8**9)
    assert math.isnan(t[(t["seed"] == 0) & (t["round"] == 3)]["test_loss"].iloc[0])


def test_sql_reader_chunks_runs_not_one_query_per_run(big_sweep):
    uri, _, runs = big_sweep
    reader = SqlMetricReader(uri, chunk=64)
    with MetricsQueries() as spy:
        rows = reader.read([r.run_id for r in runs], KEYS)
    assert spy.count == reader.calls == math.ceil(N_RUNS / 64)
    assert len(rows) == N_RUNS * N_ROUNDS * len(KEYS)


def test_rest_bulk_endpoint_two_calls_per_metric_same_rows_as_sql(big_sweep):
    """The real MLflow server handler (Flask test client) behind the REST reader's transport."""
    from mlflow.server import app, handlers
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri, client, runs = big_sweep
    endpoints = []
    http = app.test_client()

    def transport(endpoint: str, params: dict) -> dict:
        endpoints.append(endpoint)
        response = http.get(endpoint, query_string=params)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    store = SqlAlchemyStore(uri, "unused-artifacts")
    with mock.patch.object(handlers, "_tracking_store", store):
        warnings: list[str] = []
        rest, reader = read_metrics("http://tracking:5000", client, runs, KEYS, warnings, transport)
    assert warnings == []
    assert reader.name == "rest-bulk"
    assert len(endpoints) == reader.calls == len(KEYS) * math.ceil(N_RUNS / 100)
    assert set(endpoints) == {io.BULK_ENDPOINT}
    sql, _ = read_metrics(uri, client, runs, KEYS, [])
    pd.testing.assert_frame_equal(_sorted(rest), _sorted(sql))


def test_failing_bulk_path_falls_back_per_run_with_a_warning(big_sweep):
    uri, client, runs = big_sweep
    some = runs[:6]

    def broken(endpoint: str, params: dict) -> dict:
        raise RuntimeError("404 ENDPOINT_NOT_FOUND")

    warnings: list[str] = []
    rows, reader = read_metrics("https://old-server", client, some, KEYS, warnings, broken)
    assert isinstance(reader, ClientMetricReader)
    assert reader.calls == len(some) * len(KEYS)  # only keys each run logged
    assert len(warnings) == 1 and "fell back" in warnings[0] and "404" in warnings[0]
    sql = SqlMetricReader(uri).read([r.run_id for r in some], KEYS)
    pd.testing.assert_frame_equal(_sorted(rows), _sorted(sql))


def test_keys_no_run_logged_are_not_requested(big_sweep):
    uri, client, runs = big_sweep
    seen = []

    def transport(endpoint: str, params: dict) -> dict:
        seen.append(params["metric_key"])
        return {"metrics": []}

    read_metrics("http://x", client, runs[:3], schema.ROUND_METRICS, [], transport)
    assert sorted(set(seen)) == sorted(KEYS)
