"""MLflow bookkeeping of a sweep: the driver prepares the store, experiment and parent run; each trial
writes its own nested child run through a plain client.

Why a plain client and not `setup_mlflow`: many trials start at once, and letting each create the
store or experiment races on a fresh sqlite file (schema creation collides and can break the file).
The driver does all creation before any trial starts; trials only open runs that belong to them,
retry writes on transient "database is locked", and a retried trial reopens its own child run.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from lth_ray import schema
from lth_ray.config.grid import arm_of, trial_key
from lth_ray.names import tag_equals
from lth_ray.specs import TrialConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PARAM_LEN = 6000

# The experiment's kind in MLflow 3: "custom_model_development" is model training (runs table,
# charts), "genai_development" is GenAI (traces, sessions); "..._inferred" and "no_inferred_type" are
# the UI's own guesses. UIs without the sidebar's GenAI / Model training switch open an experiment in
# the view its kind names; newer ones (3.17) follow the switch, and the tag still records the kind.
# A sweep sets the training kind when the tag is missing or only a guess, never over a chosen kind.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"
UNSET_EXPERIMENT_KINDS = frozenset(
    {"", "no_inferred_type", "genai_development_inferred", "custom_model_development_inferred"}
)


def retry(fn: Callable[[], T], what: str, attempts: int = 12) -> T:
    """Run an MLflow call, retrying transient store errors (sqlite locks, HTTP hiccups) with backoff."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # mlflow wraps sqlalchemy/HTTP errors in several types
            text = str(e).lower()
            transient = any(
                s in text
                for s in ("locked", "busy", "timed out", "temporarily", "connection", "503", "502")
            )
            if not transient or i == attempts - 1:
                raise
            log.debug("retrying %s after transient error: %s", what, e)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def new_sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


@dataclass
class SweepContext:
    """What every trial needs to find its place in MLflow (plain, shipped inside the Tune config)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_id: str
    ablation: str
    system_metrics: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def prepare_sweep(
    tracking_uri: str,
    ablation: str,
    sweep_id: str,
    description: str,
    params: dict[str, Any],
    n_trials: int,
) -> SweepContext:
    """Create the store (schema), experiment and parent run, in the driver, before any trial.

    The experiment is marked as model training (EXPERIMENT_KIND_TAG) unless it already has a kind
    that someone chose."""
    client = MlflowClient(tracking_uri)
    exp = retry(lambda: client.get_experiment_by_name(ablation), "get experiment")
    if exp is None:
        exp_id = retry(
            lambda: client.create_experiment(
                ablation, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND_TRAINING}
            ),
            "create experiment",
        )
    else:
        exp_id = exp.experiment_id
        if exp.tags.get(EXPERIMENT_KIND_TAG, "") in UNSET_EXPERIMENT_KINDS:
            retry(
                lambda: client.set_experiment_tag(
                    exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING
                ),
                "tag experiment kind",
            )
    tags = {
        schema.TAG_ROLE: schema.ROLE_SWEEP,
        schema.TAG_SWEEP: sweep_id,
        schema.TAG_ABLATION: ablation,
        "lth_ray.n_trials": str(n_trials),
        "mlflow.note.content": description,
    }
    run = retry(
        lambda: client.create_run(exp_id, tags=tags, run_name=f"sweep-{sweep_id}"),
        "create parent run",
    )
    log_params(client, run.info.run_id, params)
    return SweepContext(tracking_uri, exp_id, run.info.run_id, sweep_id, ablation)


def find_sweep(
    tracking_uri: str, ablation: str, sweep_id: str | None = None
) -> SweepContext | None:
    """The parent run of `sweep_id`, or of the newest sweep of the ablation (for --resume): the
    report's lookup (`report.mlflow_io.find_sweep`), which quotes every value it filters on."""
    from lth_ray.report.errors import ReportError
    from lth_ray.report.mlflow_io import find_sweep as locate

    client = MlflowClient(tracking_uri)

    def lookup():
        try:
            return locate(client, ablation, sweep_id)
        except ReportError:  # no such experiment or sweep: nothing to resume
            return None

    ref = retry(lookup, "search sweeps")
    if ref is None or ref.parent_run_id is None:
        return None
    return SweepContext(tracking_uri, ref.experiment_id, ref.parent_run_id, ref.sweep_id, ablation)


def rounds_done(ctx: SweepContext) -> dict[str, int]:
    """Rounds each trial of the sweep has logged so far (to show true progress on --resume)."""
    client = MlflowClient(ctx.tracking_uri)
    query = (
        f"{tag_equals(schema.TAG_SWEEP, ctx.sweep_id)}"
        f" and {tag_equals(schema.TAG_ROLE, schema.ROLE_TRIAL)}"
    )
    runs = retry(
        lambda: client.search_runs([ctx.experiment_id], query, max_results=50000), "list trials"
    )
    return {
        r.data.tags[schema.TAG_TRIAL]: int(r.data.tags.get(schema.TAG_ROUNDS_DONE, "0"))
        for r in runs
    }


def set_sweep_tags(ctx: SweepContext, tags: dict[str, str]) -> None:
    client = MlflowClient(ctx.tracking_uri)
    for k, v in tags.items():
        retry(lambda k=k, v=v: client.set_tag(ctx.parent_run_id, k, v), "tag sweep")


def set_sweep_status(ctx: SweepContext, status: str, **tags: str) -> None:
    client = MlflowClient(ctx.tracking_uri)
    for k, v in tags.items():
        retry(lambda k=k, v=v: client.set_tag(ctx.parent_run_id, k, v), "tag sweep")
    if status == "RUNNING":
        retry(lambda: client.update_run(ctx.parent_run_id, status="RUNNING"), "reopen sweep")
    else:
        retry(lambda: client.set_terminated(ctx.parent_run_id, status), "end sweep")


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in sorted(flatten(params).items())]
    for i in range(0, len(items), 100):
        chunk = items[i : i + 100]
        retry(lambda chunk=chunk: client.log_batch(run_id, params=chunk), "log params")


def log_metrics(client: MlflowClient, run_id: str, metrics: Iterable[Metric]) -> None:
    items = list(metrics)
    for i in range(0, len(items), 900):
        chunk = items[i : i + 900]
        retry(lambda chunk=chunk: client.log_batch(run_id, metrics=chunk), "log metrics")


def steps_unit(cfg: TrialConfig) -> str:
    """'it' when a trial counts its rounds or its evaluation interval in iterations (Frankle &
    Carbin), else 'ep': the unit the report plots early stopping in."""
    counted = (cfg.train.retrain, cfg.train.eval_every)
    return "it" if any(str(v).strip().endswith("it") for v in counted) else "ep"


def trial_tags(ctx: SweepContext, cfg: TrialConfig, num_classes: int) -> dict[str, str]:
    """The trial's place in the sweep: plain grid tags, its arm, and one tag per varying field named
    by its dotted path (filter in the UI with tags."prune.rewind" = '1ep')."""
    return {
        **cfg.axes,
        schema.TAG_AXES: ",".join(cfg.axes),
        schema.TAG_ARM: arm_of(cfg),
        schema.TAG_CONTROL_INDEX: str(cfg.prune.control_index),
        schema.TAG_STEPS_UNIT: steps_unit(cfg),
        schema.TAG_ROLE: schema.ROLE_TRIAL,
        schema.TAG_SWEEP: ctx.sweep_id,
        schema.TAG_ABLATION: ctx.ablation,
        schema.TAG_TRIAL: trial_key(cfg),
        schema.TAG_ROUNDS_TOTAL: str(cfg.prune.rounds + 1),
        schema.TAG_NUM_CLASSES: str(num_classes),
        schema.TAG_ROUNDS_DONE: "0",
        schema.MLFLOW_PARENT: ctx.parent_run_id,
        schema.TAG_CRITERION: cfg.prune.criterion,
        schema.TAG_SEED: str(cfg.seed),
        schema.TAG_PRUNE_RATE: f"{cfg.prune.fraction:g}",
        schema.TAG_SCHEDULE: cfg.prune.schedule,
        schema.TAG_CONTROL: cfg.prune.control,
    }


class TrialRun:
    """A trial's child run. Logging a round is idempotent: a round already in MLflow is not re-logged,
    so a trial retried after dying between its MLflow write and its checkpoint logs each round once."""

    def __init__(
        self, ctx: SweepContext, cfg: TrialConfig, num_classes: int, run_id: str | None = None
    ) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.client = MlflowClient(ctx.tracking_uri)
        if run_id is None:  # died before its first checkpoint? then its run exists already
            run_id = self._existing_run(trial_key(cfg))
        if run_id is None:
            run = retry(
                lambda: self.client.create_run(
                    ctx.experiment_id,
                    tags=trial_tags(ctx, cfg, num_classes),
                    run_name=trial_key(cfg),
                ),
                "create trial run",
            )
            self.run_id = run.info.run_id
            log_params(self.client, self.run_id, cfg.to_dict())
            self.logged_rounds: set[int] = set()
        else:
            self.run_id = run_id
            retry(lambda: self.client.update_run(run_id, status="RUNNING"), "reopen trial run")
            history = retry(
                lambda: self.client.get_metric_history(run_id, "test_acc"), "read history"
            )
            self.logged_rounds = {int(m.step) for m in history}
        self._monitor = None

    def _existing_run(self, key: str) -> str | None:
        query = (
            f"{tag_equals(schema.TAG_SWEEP, self.ctx.sweep_id)}"
            f" and {tag_equals(schema.TAG_TRIAL, key)}"
            f" and {tag_equals(schema.TAG_ROLE, schema.ROLE_TRIAL)}"
        )
        runs = retry(
            lambda: self.client.search_runs([self.ctx.experiment_id], query, max_results=1),
            "find trial run",
        )
        return runs[0].info.run_id if runs else None

    def start_system_metrics(self) -> None:
        """MLflow's CPU/GPU/memory sampler for this run (needs psutil; GPU via pynvml where present)."""
        if not self.ctx.system_metrics:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id,
                sampling_interval=10,
                resume_logging=True,
                tracking_uri=self.ctx.tracking_uri,
            )
            self._monitor.start()
        except Exception as e:  # optional: never let monitoring break a trial
            log.info("system metrics unavailable: %s", e)
            self._monitor = None

    def log_round(
        self, record: dict[str, Any], curve: list[dict[str, float]], epoch_offset: int
    ) -> bool:
        """Per-round metrics at step = round; learning curves at step = evaluation across the trial
        (the epoch, with the default interval of one epoch)."""
        r = int(record["round"])
        if r in self.logged_rounds:
            return False
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, r)
            for k, v in record.items()
            if k != "round" and isinstance(v, int | float) and not isinstance(v, bool)
        ]
        for i, e in enumerate(curve):
            step = epoch_offset + i + 1
            metrics += [
                Metric("epoch_train_loss", float(e["train_loss"]), now, step),
                Metric("epoch_val_loss", float(e["val_loss"]), now, step),
                Metric("epoch_val_acc", float(e["val_acc"]), now, step),
            ]
            if "iteration" in e:  # curves checkpointed before it was recorded lack it
                metrics.append(Metric("epoch_iteration", float(e["iteration"]), now, step))
        log_metrics(self.client, self.run_id, metrics)
        retry(
            lambda: self.client.set_tag(self.run_id, schema.TAG_ROUNDS_DONE, str(r + 1)),
            "tag rounds",
        )
        self.logged_rounds.add(r)
        return True

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        retry(
            lambda: self.client.log_artifacts(self.run_id, str(folder), artifact_path),
            "log artifacts",
        )

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            retry(lambda k=k, v=v: self.client.set_tag(self.run_id, k, v), "tag trial")

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        retry(lambda: self.client.log_metric(self.run_id, key, value, step=step), "log metric")

    def pause(self) -> None:
        """Stop this process's system metrics; the run stays RUNNING for the part that continues it."""
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception as e:
                log.info("system metrics did not stop cleanly: %s", e)
            self._monitor = None

    def end(self, status: str = "FINISHED") -> None:
        self.pause()
        retry(lambda: self.client.set_terminated(self.run_id, status), "end trial run")


def pair_run(
    ctx: SweepContext, cfg: TrialConfig, name: str, tags: dict[str, str], params: dict[str, Any]
) -> str:
    """An instability pair's child run (reopened by name when a retried pair starts again)."""
    client = MlflowClient(ctx.tracking_uri)
    query = (
        f"tags.`{schema.TAG_SWEEP}` = '{ctx.sweep_id}' and tags.`{schema.TAG_TRIAL}` = '{name}'"
        f" and tags.`{schema.TAG_ROLE}` = '{schema.ROLE_INSTABILITY}'"
    )
    runs = retry(lambda: client.search_runs([ctx.experiment_id], query, max_results=1), "find pair")
    if runs:
        return runs[0].info.run_id
    all_tags = {
        schema.TAG_ROLE: schema.ROLE_INSTABILITY,
        schema.TAG_SWEEP: ctx.sweep_id,
        schema.TAG_ABLATION: ctx.ablation,
        schema.TAG_TRIAL: name,
        schema.MLFLOW_PARENT: ctx.parent_run_id,
        schema.TAG_SEED: str(cfg.seed),
        schema.TAG_CRITERION: cfg.prune.criterion,
        schema.TAG_PRUNE_RATE: f"{cfg.prune.fraction:g}",
        **tags,
    }
    run = retry(
        lambda: client.create_run(ctx.experiment_id, tags=all_tags, run_name=name), "create pair"
    )
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_pair(
    ctx: SweepContext,
    run_id: str,
    metrics: dict[str, float],
    path: dict[str, list[float]],
    tags: dict[str, str],
) -> None:
    """A pair's summaries, and the error along the path at step = alpha index; then FINISHED."""
    client = MlflowClient(ctx.tracking_uri)
    for k, v in tags.items():
        retry(lambda k=k, v=v: client.set_tag(run_id, k, v), "tag pair run")
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for split, errors in path.items():
        name = schema.LMC_PATH.format(split=split)
        items += [Metric(name, float(e), now, i) for i, e in enumerate(errors)]
    log_metrics(client, run_id, items)
    retry(lambda: client.set_terminated(run_id, "FINISHED"), "end pair run")
