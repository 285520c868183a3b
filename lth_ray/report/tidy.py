"""MLflow runs + long metric rows -> the tidy trial x round table (pure pandas, no MLflow).

Kept separate from the MLflow reading so the table's rules (units, completeness, duplicates) can be
tested without a tracking store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from lth_ray import schema

COMPLETE, INCOMPLETE = "complete", "incomplete"
# Identity columns first, then the core per-round metrics, then the rest of the per-round metrics, then bookkeeping.
ID_COLUMNS = ["sweep", "trial", "criterion", "seed", "prune_rate", "schedule", "control", "round"]
CORE_METRICS = [
    "sparsity",
    "weights_remaining",
    "test_acc",
    "test_loss",
    "best_epoch",
    "val_loss_best",
    "skipped",
]
EXTRA_METRICS = [m for m in schema.ROUND_METRICS if m not in CORE_METRICS]
META_COLUMNS = [
    "status",
    "steps_unit",
    "run_status",
    "rounds_done",
    "rounds_total",
    "num_classes",
    "experiment",
    "run_id",
    schema.ENERGY_METRIC,
]
COLUMNS = ID_COLUMNS + CORE_METRICS + META_COLUMNS[:1] + EXTRA_METRICS + META_COLUMNS[1:]
# The metric that defines "a round was logged": the report's quantity of interest.
ROUND_KEY = "test_acc"


@dataclass
class RunRecord:
    """What the report needs of one MLflow child run (decoupled from mlflow.entities.Run)."""

    run_id: str
    status: str  # MLflow status: RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    start_time: int
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)  # latest values (whole-trial metrics)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def axis_columns(table: pd.DataFrame) -> list[str]:
    """The extra grid axes of a tidy table: its columns named by a dotted field path."""
    return [c for c in table.columns if "." in c]


def _extra_axes(tags: dict[str, str]) -> list[str]:
    listed = [a for a in tags.get(schema.TAG_AXES, "").split(",") if a]
    return [a for a in listed if a not in schema.FIELD_TAGS]


def latest_per_step(metrics: pd.DataFrame) -> pd.DataFrame:
    """Keep the last-logged value of every (run, metric, round): a resumed trial may re-log a round."""
    if metrics.empty:
        return metrics
    ordered = metrics.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
    return ordered.drop_duplicates(["run_id", "key", "step"], keep="last")


def _dedupe_trials(meta: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """One run per trial key: a restarted trial can leave a second child run behind."""
    meta = meta.assign(_complete=meta["status"] == COMPLETE).sort_values(
        ["trial", "_complete", "rounds_done", "start_time"], ascending=[True, False, False, False]
    )
    dup = meta[meta.duplicated("trial", keep="first")]
    for trial, rows in dup.groupby("trial"):
        kept = meta.loc[meta["trial"] == trial, "run_id"].iloc[0]
        warnings.append(
            f"trial {trial}: {len(rows) + 1} MLflow runs; using run {kept} "
            f"(complete/most rounds/newest), ignoring {', '.join(rows['run_id'])}"
        )
    return meta.drop_duplicates("trial", keep="first").drop(columns="_complete")


def tidy_trials(
    runs: list[RunRecord],
    metrics: pd.DataFrame,
    sweep: str,
    experiment: str,
    warnings: list[str] | None = None,
) -> pd.DataFrame:
    """One row per trial x logged round; a trial with no round yet keeps one row with round = NA.

    `metrics` is long: run_id, key, step, value, timestamp. Units are MLflow's (accuracy fraction,
    sparsity fraction, weights_remaining percent). A trial is complete when its run FINISHED and it
    logged `lth_ray.rounds_total` rounds; everything else is incomplete and keeps its rows.
    """
    warnings = [] if warnings is None else warnings
    metrics = latest_per_step(metrics)
    rounds_logged = (
        metrics[metrics["key"] == ROUND_KEY].groupby("run_id")["step"].nunique()
        if not metrics.empty
        else pd.Series(dtype=int)
    )
    no_total = []
    records = []
    for r in runs:
        t = r.tags
        done = int(rounds_logged.get(r.run_id, 0))
        total = _int(t.get(schema.TAG_ROUNDS_TOTAL))
        if total is None:
            no_total.append(r.run_id)
        complete = r.status == "FINISHED" and (total is None or done >= total)
        records.append(
            {
                "run_id": r.run_id,
                "sweep": t.get(schema.TAG_SWEEP) or sweep,
                "trial": t.get(schema.TAG_TRIAL) or r.run_id,
                "criterion": t.get(schema.TAG_CRITERION, "?"),
                "seed": _int(t.get(schema.TAG_SEED)),
                "prune_rate": _float(t.get(schema.TAG_PRUNE_RATE)),
                "schedule": t.get(schema.TAG_SCHEDULE, "iterative"),
                "control": t.get(schema.TAG_CONTROL, "none"),
                "control_index": _int(t.get(schema.TAG_CONTROL_INDEX)) or 0,
                "steps_unit": t.get(schema.TAG_STEPS_UNIT, "ep"),
                **{a: t.get(a) for a in _extra_axes(t)},
                "rounds_total": total,
                "num_classes": _int(t.get(schema.TAG_NUM_CLASSES)),
                "rounds_done": done,
                "run_status": r.status,
                "status": COMPLETE if complete else INCOMPLETE,
                "start_time": r.start_time,
                schema.ENERGY_METRIC: r.metrics.get(schema.ENERGY_METRIC),
            }
        )
    if no_total:
        warnings.append(
            f"{len(no_total)} trial run(s) lack the {schema.TAG_ROUNDS_TOTAL} tag: "
            "counted complete when FINISHED"
        )
    meta = _dedupe_trials(pd.DataFrame.from_records(records), warnings)

    wanted = metrics[
        metrics["key"].isin(schema.ROUND_METRICS) & metrics["run_id"].isin(meta["run_id"])
    ]
    wide = (
        wanted.pivot_table(index=["run_id", "step"], columns="key", values="value", aggfunc="last")
        .reset_index()
        .rename(columns={"step": "round"})
        if not wanted.empty
        else pd.DataFrame(columns=["run_id", "round"])
    )
    wide.columns.name = None
    table = meta.merge(wide, on="run_id", how="left")  # runs without rounds keep one NA row
    table["experiment"] = experiment  # `sweep` comes from each run: a report may join sweeps
    for col in COLUMNS:
        if col not in table:
            table[col] = float("nan")
    axes = list(dict.fromkeys(a for r in runs for a in _extra_axes(r.tags)))
    at = ID_COLUMNS.index("control") + 1
    columns = ID_COLUMNS[:at] + axes + ["control_index"] + COLUMNS[at:]
    table = table[columns].astype(
        {"round": "Int64", "seed": "Int64", "rounds_total": "Int64", "num_classes": "Int64"}
    )
    return table.sort_values(
        [
            "criterion",
            "prune_rate",
            *axes,
            "schedule",
            "control",
            "control_index",
            "seed",
            "trial",
            "round",
        ],
        kind="stable",
        na_position="last",
    ).reset_index(drop=True)
