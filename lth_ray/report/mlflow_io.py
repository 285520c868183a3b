"""Finding a sweep in MLflow and pulling its trials' per-round metrics in bulk.

A sweep holds hundreds of trials x ~16 rounds x ~16 metrics; one `get_metric_history` call per run
and metric would be thousands of REST round trips. The reader is chosen from the tracking URI:

- database URI (sqlite, postgresql, mysql, mssql): one SELECT on MLflow's `metrics` table for all
  runs and metrics (in chunks of `SqlMetricReader.chunk` runs);
- http(s) tracking server: `GetMetricHistoryBulkInterval`
  (GET /api/2.0/mlflow/metrics/get-history-bulk-interval), one call per metric per 100 runs;
- anything else, or when the bulk path fails (old server, changed schema): `MlflowClient.
  get_metric_history` per run and metric, with a warning in the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from lth_ray import schema
from lth_ray.names import tag_equals
from lth_ray.report.errors import ReportError
from lth_ray.report.tidy import RunRecord, tidy_trials

SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
METRIC_COLUMNS = ["run_id", "key", "step", "value", "timestamp"]
PAGE = 1000  # search_runs page size (MLflow's default maximum per page)


def _scheme(uri: str) -> str:
    return urlparse(uri).scheme.split("+")[0].lower()


def _sqlite_path(uri: str) -> Path | None:
    """The file of a sqlite URI (None for in-memory); MLflow would silently create a missing one."""
    rest = uri.split(":///", 1)[1] if ":///" in uri else ""
    return Path(rest) if rest and rest != ":memory:" else None


def open_client(uri: str):
    """An MlflowClient for `uri`, refusing a sqlite file that does not exist (no stray mlflow.db)."""
    from mlflow import MlflowClient

    if _scheme(uri) == "sqlite":
        path = _sqlite_path(uri)
        if path is not None and not path.is_file():
            raise ReportError(f"no MLflow store at {uri} (file {path} not found)")
    return MlflowClient(tracking_uri=uri)


# ------------------------------------------------------------------------------------------------
# Locating the sweep.


@dataclass
class SweepRef:
    experiment_id: str
    experiment_name: str
    sweep_id: str
    parent_run_id: str | None


def _search_all(client, experiment_ids: Sequence[str], filter_string: str, order_by=None) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            list(experiment_ids),
            filter_string,
            max_results=PAGE,
            order_by=order_by,
            page_token=token,
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _tag_filter(key: str, value: str) -> str:
    try:
        return tag_equals(key, value)
    except ValueError as e:  # a value no MLflow filter can hold
        raise ReportError(str(e)) from None


def _experiments(client) -> list:
    out, token = [], None
    while True:
        page = client.search_experiments(max_results=PAGE, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def _sweep_experiments(client, limit: int = 10) -> str:
    """Names of the experiments that hold sweep parent runs (for the 'not found' message)."""
    by_id = {e.experiment_id: e.name for e in _experiments(client)}
    if not by_id:
        return ""
    parents = _search_all(client, list(by_id), _tag_filter(schema.TAG_ROLE, schema.ROLE_SWEEP))
    names = sorted({by_id[p.info.experiment_id] for p in parents})
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


def find_sweep(client, experiment: str | None, sweep: str | None) -> SweepRef:
    """The requested sweep, or the newest sweep parent run (of `experiment`, else of the store)."""
    if experiment is not None:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ReportError(
                f"experiment '{experiment}' not found; experiments with sweeps: "
                f"{_sweep_experiments(client) or 'none'}"
            )
        exps = [exp]
    else:
        exps = _experiments(client)
        if not exps:
            raise ReportError("the tracking store has no experiments")
    by_id = {e.experiment_id: e for e in exps}
    role = _tag_filter(schema.TAG_ROLE, schema.ROLE_SWEEP)
    where = role if sweep is None else f"{role} AND {_tag_filter(schema.TAG_SWEEP, sweep)}"
    parents = client.search_runs(
        list(by_id), where, max_results=1, order_by=["attributes.start_time DESC"]
    )
    if parents:
        p = parents[0]
        return SweepRef(
            p.info.experiment_id,
            by_id[p.info.experiment_id].name,
            p.data.tags.get(schema.TAG_SWEEP, ""),
            p.info.run_id,
        )
    scope = f"experiment '{experiment}'" if experiment else "the tracking store"
    if sweep is None:
        raise ReportError(f"no sweep runs ({schema.TAG_ROLE}={schema.ROLE_SWEEP}) in {scope}")
    # A sweep whose parent run is missing can still be reported from its trials.
    trials = client.search_runs(list(by_id), _tag_filter(schema.TAG_SWEEP, sweep), max_results=1)
    if not trials:
        raise ReportError(f"sweep '{sweep}' not found in {scope}")
    t = trials[0]
    return SweepRef(t.info.experiment_id, by_id[t.info.experiment_id].name, sweep, None)


def trial_runs(client, ref: SweepRef) -> list[RunRecord]:
    where = (
        f"{_tag_filter(schema.TAG_SWEEP, ref.sweep_id)} AND "
        f"{_tag_filter(schema.TAG_ROLE, schema.ROLE_TRIAL)}"
    )
    runs = _search_all(client, [ref.experiment_id], where)
    return [
        RunRecord(
            run_id=r.info.run_id,
            status=r.info.status,
            start_time=r.info.start_time or 0,
            tags=dict(r.data.tags),
            metrics=dict(r.data.metrics),
        )
        for r in runs  # the sweep tag, not the parent run id: a resumed sweep may add a parent
    ]


# ------------------------------------------------------------------------------------------------
# Bulk metric readers: (run ids, metric keys) -> long DataFrame[run_id, key, step, value, timestamp].


def _frame(rows: list) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=METRIC_COLUMNS).astype(
        {"step": "int64", "value": "float64", "timestamp": "int64"}
    )


@dataclass
class SqlMetricReader:
    """One SELECT on MLflow's `metrics` table per `chunk` runs, all keys at once."""

    uri: str
    chunk: int = 500
    name: str = "sql"
    calls: int = 0

    def read(self, run_ids: Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
        import sqlalchemy as sa

        query = sa.text(
            "SELECT run_uuid, key, step, value, timestamp, is_nan FROM metrics "
            "WHERE run_uuid IN :ids AND key IN :keys"
        ).bindparams(sa.bindparam("ids", expanding=True), sa.bindparam("keys", expanding=True))
        engine = sa.create_engine(self.uri)
        rows = []
        try:
            with engine.connect() as conn:
                for i in range(0, len(run_ids), self.chunk):
                    ids = list(run_ids[i : i + self.chunk])
                    self.calls += 1
                    for run, key, step, value, ts, is_nan in conn.execute(
                        query, {"ids": ids, "keys": list(keys)}
                    ):
                        rows.append((run, key, step, math.nan if is_nan else value, ts or 0))
        finally:
            engine.dispose()
        return _frame(rows)


Transport = Callable[[str, dict], dict]
BULK_ENDPOINT = "/api/2.0/mlflow/metrics/get-history-bulk-interval"


def _http_transport(uri: str) -> Transport:
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    creds = get_default_host_creds(uri)

    def get(endpoint: str, params: dict) -> dict:
        response = http_request(creds, endpoint, "GET", params=params)
        return verify_rest_response(response, endpoint).json()

    return get


@dataclass
class RestMetricReader:
    """GetMetricHistoryBulkInterval: one call per metric per `chunk` runs (the server's maximum).

    With max_results at the server's limit (2500 per run) the endpoint samples nothing for sweeps of
    fewer rounds than that, so every logged round comes back.
    """

    uri: str
    transport: Transport | None = None
    chunk: int = 100
    max_results: int = 2500
    name: str = "rest-bulk"
    calls: int = 0

    def read(self, run_ids: Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
        get = self.transport or _http_transport(self.uri)
        rows = []
        for key in keys:
            for i in range(0, len(run_ids), self.chunk):
                params = {
                    "run_ids": list(run_ids[i : i + self.chunk]),
                    "metric_key": key,
                    "max_results": self.max_results,
                }
                self.calls += 1
                for m in get(BULK_ENDPOINT, params).get("metrics", []):
                    rows.append(
                        (
                            m["run_id"],
                            m["key"],
                            int(m.get("step", 0)),
                            float(m["value"]),
                            int(m.get("timestamp", 0)),
                        )
                    )
        return _frame(rows)


@dataclass
class ClientMetricReader:
    """The slow, universal fallback: MlflowClient.get_metric_history per run and metric."""

    client: object
    keys_by_run: dict[str, set[str]] = field(default_factory=dict)  # skip keys a run never logged
    name: str = "per-run"
    calls: int = 0

    def read(self, run_ids: Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
        rows = []
        for run_id in run_ids:
            for key in keys:
                if self.keys_by_run and key not in self.keys_by_run.get(run_id, ()):
                    continue
                self.calls += 1
                for m in self.client.get_metric_history(run_id, key):
                    rows.append((run_id, key, m.step, m.value, m.timestamp))
        return _frame(rows)


def bulk_reader(uri: str, transport: Transport | None = None):
    """The bulk reader for this kind of store, or None when only the per-run fallback applies."""
    scheme = _scheme(uri)
    if scheme in SQL_SCHEMES:
        return SqlMetricReader(uri)
    if scheme in ("http", "https"):
        return RestMetricReader(uri, transport)
    return None


def read_metrics(
    uri: str,
    client,
    runs: list[RunRecord],
    keys: Sequence[str],
    warnings: list[str],
    transport: Transport | None = None,
) -> tuple[pd.DataFrame, object]:
    """Long metric rows for `runs`, bulk when the store allows it; returns (rows, reader used)."""
    present = {r.run_id: set(r.metrics) for r in runs}  # latest metrics name every logged key
    keys = [k for k in keys if any(k in p for p in present.values())]
    run_ids = [r.run_id for r in runs]
    if not run_ids or not keys:
        return _frame([]), None
    reader = bulk_reader(uri, transport)
    if reader is not None:
        try:
            return reader.read(run_ids, keys), reader
        except Exception as e:  # old server, changed schema, ...: correctness over speed
            warnings.append(
                f"bulk metric read ({reader.name}) failed ({type(e).__name__}: {e}); "
                "fell back to one get_metric_history call per run and metric"
            )
    fallback = ClientMetricReader(client, present)
    return fallback.read(run_ids, keys), fallback


@dataclass
class SweepData:
    ref: SweepRef  # the first (newest, or first named) sweep
    trials: pd.DataFrame
    warnings: list[str]
    reader: str
    refs: list[SweepRef] = field(default_factory=list)  # every sweep in the report
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)  # long per-evaluation metrics
    load_masks: Callable[[str, int], dict | None] | None = None  # (run id, round) -> masks


def all_sweeps(client, experiment: str) -> list[str]:
    """Every sweep id of an experiment, oldest first (a study run in parts)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ReportError(f"experiment '{experiment}' not found")
    parents = _search_all(
        client,
        [exp.experiment_id],
        _tag_filter(schema.TAG_ROLE, schema.ROLE_SWEEP),
        order_by=["attributes.start_time ASC"],
    )
    return list(dict.fromkeys(p.data.tags.get(schema.TAG_SWEEP, "") for p in parents))


def mask_loader(client) -> Callable[[str, int], dict | None]:
    """Reads a trial's `masks/round_XX.pt` artifact (None when it is missing)."""
    import tempfile

    import torch

    def load(run_id: str, round_index: int) -> dict | None:
        try:
            with tempfile.TemporaryDirectory() as folder:
                path = client.download_artifacts(
                    run_id, f"masks/round_{round_index:02d}.pt", folder
                )
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a missing artifact or an unreadable file: reported as missing
            return None

    return load


def load_sweep(
    tracking_uri: str | None,
    experiment: str | None = None,
    sweep: str | list[str] | None = None,
    transport: Transport | None = None,
    every_sweep: bool = False,
) -> SweepData:
    """Locate the sweep(s) and return the tidy trial x round table of all their trials.

    Several sweeps (a list, or `every_sweep` of the experiment) are reported as one study run in
    parts; the table's `sweep` column says where each trial came from.
    """
    from mlflow.exceptions import MlflowException

    from lth_ray.report.curves import CURVE_KEYS

    uri = schema.resolve_tracking_uri(tracking_uri)
    warnings: list[str] = []
    try:
        client = open_client(uri)
        if every_sweep:
            if experiment is None:
                raise ReportError("reporting every sweep needs --experiment")
            names: list[str | None] = list(all_sweeps(client, experiment))
        else:
            names = list(sweep) if isinstance(sweep, list) and sweep else [sweep or None]
        refs = [find_sweep(client, experiment, name) for name in names]
        runs = [run for ref in refs for run in trial_runs(client, ref)]
        if not runs:
            which = ", ".join(f"'{r.sweep_id}'" for r in refs)
            raise ReportError(
                f"sweep {which} in experiment '{refs[0].experiment_name}' has no trial runs"
            )
        keys = (*schema.ROUND_METRICS, *CURVE_KEYS)
        metrics, reader = read_metrics(uri, client, runs, keys, warnings, transport)
    except MlflowException as e:
        raise ReportError(f"MLflow at {uri}: {e.message}") from e
    sweep_label = "+".join(r.sweep_id for r in refs)
    curves = metrics[metrics["key"].isin(CURVE_KEYS)]
    rounds = metrics[~metrics["key"].isin(CURVE_KEYS)]
    table = tidy_trials(runs, rounds, sweep_label, refs[0].experiment_name, warnings)
    return SweepData(
        refs[0],
        table,
        warnings,
        getattr(reader, "name", "none"),
        refs=refs,
        curves=curves,
        load_masks=mask_loader(client),
    )
