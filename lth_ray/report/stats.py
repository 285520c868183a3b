"""Statistics across seeds: per-level t-intervals and the per-group summary (pure pandas/scipy).

Definitions (the README repeats them; summary.md states them in one paragraph):
- 95% CI: Student t-interval across seeds, mean +- t_{0.975, n-1} * s / sqrt(n), s the sample standard
  deviation. n = 1 gives no interval (NaN bounds; plots draw a line without a band). Accuracy
  bounds are clipped to [0, 100]% (few seeds give wide intervals: t_{0.975,1} = 12.7); early-stop
  bounds to [first evaluation, the round's training budget] (epochs or iterations trained).
- A group is one value of every grid axis but the seed: criterion, prune rate, schedule, control, and
  any other field the sweep varies (`prune.rewind`, `model.width`, ...). Its n counts seeds: repeated
  controls of one ticket are averaged per seed first.
- Only complete trials enter the statistics, so every level of a group has the same seeds; incomplete
  trials are listed and marked separately, never averaged in.
- A level is a pruning round; its weights remaining is the mean over seeds (rounds a criterion skips can
  make seeds differ; the spread is kept in `weights_remaining_spread_pct`).
- Matches dense: paired non-inferiority at equal sparsity (compare.noninferiority): the lower bound of
  the 95% paired interval of (level - dense, same seed) is above -margin. Reported level: the sparsest
  of the unbroken run of such levels from the first pruned one (a fixed sequence), the rule the
  verdict uses too. One seed gives no interval, hence no match. Largest gain over dense: the level
  with the largest mean paired difference, with its (unadjusted, selected) 95% interval.
- Chance collapse: the first level in round order whose mean accuracy < chance + 5 percentage points,
  chance = 100 / num_classes %.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from lth_ray.report.tidy import COMPLETE, axis_columns

GROUP_KEYS = ["criterion", "prune_rate", "schedule", "control"]


def group_keys(table: pd.DataFrame) -> list[str]:
    """What defines a group of a sweep: the fixed keys plus the sweep's extra axes."""
    return GROUP_KEYS[:2] + axis_columns(table) + GROUP_KEYS[2:]


CONFIDENCE = 0.95
CHANCE_MARGIN_PP = 5.0


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    sd: float


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and t-interval of the finite values; bounds are NaN below two values."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, math.nan)
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def accuracy_interval(values_pct: Iterable[float]) -> Interval:
    """t-interval of accuracies in %, bounds clipped to the possible range [0, 100]."""
    ci = t_interval(values_pct)
    return (
        dataclasses.replace(ci, low=max(ci.low, 0.0), high=min(ci.high, 100.0)) if ci.n > 1 else ci
    )


def budget_interval(values: Iterable[float], low: float, budget: float) -> Interval:
    """t-interval of an early-stop point, bounds clipped to what training can reach: from the first
    evaluation (`low`) to the round's budget (NaN: not logged, no upper clip)."""
    ci = t_interval(values)
    if ci.n < 2:
        return ci
    high = min(ci.high, budget) if np.isfinite(budget) else ci.high
    return dataclasses.replace(ci, low=max(ci.low, low), high=high)


def _budget(rows: pd.DataFrame, column: str) -> float:
    """The most a seed of this level trained (epochs or iterations), NaN when not logged."""
    if column not in rows:
        return math.nan
    values = pd.to_numeric(rows[column], errors="coerce")
    return float(values.max()) if values.notna().any() else math.nan


def complete_rows(trials: pd.DataFrame) -> pd.DataFrame:
    rows = trials[(trials["status"] == COMPLETE) & trials["round"].notna()].copy()
    rows["acc_pct"] = rows["test_acc"] * 100.0
    return rows


LEVEL_COLUMNS = [
    "round",
    "n",
    "weights_remaining_pct",
    "weights_remaining_spread_pct",
    "sparsity_pct",
    "acc_mean_pct",
    "acc_sd_pct",
    "acc_ci_low_pct",
    "acc_ci_high_pct",
    "best_epoch_mean",
    "best_epoch_ci_low",
    "best_epoch_ci_high",
    "best_iteration_mean",
    "best_iteration_ci_low",
    "best_iteration_ci_high",
    "test_loss_mean",
    "val_loss_best_mean",
    "skipped_frac",
]


def per_seed(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per group x seed x round: repeated controls of one ticket averaged."""
    if rows.empty or "control_index" not in rows or not (rows["control_index"].fillna(0) > 0).any():
        return rows
    numeric = [c for c in rows.columns if c not in keys + ["seed", "round"]]
    numeric = [c for c in numeric if pd.api.types.is_numeric_dtype(rows[c])]
    return (
        rows.groupby(keys + ["seed", "round"], dropna=False, sort=True)[numeric]
        .mean()
        .reset_index()
    )


def level_stats(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per group x round over complete trials."""
    keys = group_keys(trials)
    rows = per_seed(complete_rows(trials), keys)
    out = []
    for key, g in rows.groupby(keys + ["round"], sort=True, dropna=False):
        acc = accuracy_interval(g["acc_pct"])
        epoch = budget_interval(g["best_epoch"], 1.0, _budget(g, "epochs"))
        iteration = (
            budget_interval(g["best_iteration"], 0.0, _budget(g, "iterations"))
            if "best_iteration" in g
            else t_interval([])
        )
        wr = g["weights_remaining"]
        out.append(
            (
                *key,
                acc.n,
                wr.mean(),
                wr.max() - wr.min(),
                g["sparsity"].mean() * 100.0,
                acc.mean,
                acc.sd,
                acc.low,
                acc.high,
                epoch.mean,
                epoch.low,
                epoch.high,
                iteration.mean,
                iteration.low,
                iteration.high,
                g["test_loss"].mean(),
                g["val_loss_best"].mean(),
                g["skipped"].mean(),
            )
        )
    levels = pd.DataFrame.from_records(out, columns=keys + LEVEL_COLUMNS)
    return levels.astype({"round": "int64", "n": "int64"})


SUMMARY_COLUMNS = [
    "n_seeds",
    "n_incomplete",
    "rounds",
    "chance_pct",
    "dense_acc_mean_pct",
    "dense_acc_ci_low_pct",
    "dense_acc_ci_high_pct",
    "dense_acc_sd_pct",
    "matches_dense_margin_pp",
    "matches_dense_round",
    "matches_dense_weights_remaining_pct",
    "matches_dense_sparsity_pct",
    "best_gain_pp",
    "best_gain_ci_low_pp",
    "best_gain_ci_high_pp",
    "best_gain_round",
    "best_gain_weights_remaining_pct",
    "chance_collapse_round",
    "chance_collapse_weights_remaining_pct",
    "chance_collapse_sparsity_pct",
    "early_stop_epoch_dense",
    "early_stop_epoch_min",
    "early_stop_epoch_min_weights_remaining_pct",
    "early_stop_epoch_by_level",
]


def fmt_level(wr: float) -> str:
    """Weights remaining as Frankle & Carbin label it: 100, 51.2, 6.9, 0.92."""
    if not np.isfinite(wr):
        return "-"
    if wr >= 1:
        return f"{wr:.1f}".rstrip("0").rstrip(".")
    return f"{wr:.2g}"


def chance_collapse_level(levels: pd.DataFrame, chance_pct: float) -> pd.Series | None:
    """The first level in round order whose mean accuracy < chance + 5 points."""
    below = levels[levels["acc_mean_pct"] < chance_pct + CHANCE_MARGIN_PP].sort_values("round")
    return None if below.empty else below.iloc[0]


def _group_summary(
    keys: list[str], key: tuple, lv: pd.DataFrame, chance_pct: float, vs_dense: pd.DataFrame | None
) -> dict:
    row = dict(zip(keys, key))
    row["chance_pct"] = chance_pct
    lv = lv.sort_values("round")
    dense = lv[lv["round"] == 0]
    if dense.empty:
        return row
    d = dense.iloc[0]
    row.update(
        rounds=int(lv["round"].max()) + 1,
        dense_acc_mean_pct=d["acc_mean_pct"],
        dense_acc_ci_low_pct=d["acc_ci_low_pct"],
        dense_acc_ci_high_pct=d["acc_ci_high_pct"],
        dense_acc_sd_pct=d["acc_sd_pct"],
        early_stop_epoch_dense=d["best_epoch_mean"],
    )
    if vs_dense is not None and not vs_dense.empty:
        row["matches_dense_margin_pp"] = vs_dense["margin_pp"].iloc[0]
        run = vs_dense[vs_dense["matches"]].sort_values("round")
        if len(run):
            m = run.iloc[-1]
            row.update(
                matches_dense_round=m["round"],
                matches_dense_weights_remaining_pct=m["weights_remaining_pct"],
                matches_dense_sparsity_pct=100.0 - m["weights_remaining_pct"],
            )
        best = vs_dense.loc[vs_dense["mean_diff_pp"].idxmax()]
        row.update(
            best_gain_pp=best["mean_diff_pp"],
            best_gain_ci_low_pp=best["ci_low_pp"],
            best_gain_ci_high_pp=best["ci_high_pp"],
            best_gain_round=best["round"],
            best_gain_weights_remaining_pct=best["weights_remaining_pct"],
        )
    if np.isfinite(chance_pct):
        c = chance_collapse_level(lv, chance_pct)
        if c is not None:
            row.update(
                chance_collapse_round=c["round"],
                chance_collapse_weights_remaining_pct=c["weights_remaining_pct"],
                chance_collapse_sparsity_pct=c["sparsity_pct"],
            )
    if lv["best_epoch_mean"].notna().any():
        fastest = lv.loc[lv["best_epoch_mean"].idxmin()]
        row.update(
            early_stop_epoch_min=fastest["best_epoch_mean"],
            early_stop_epoch_min_weights_remaining_pct=fastest["weights_remaining_pct"],
        )
    row["early_stop_epoch_by_level"] = "; ".join(
        f"{fmt_level(w)}%: {e:.1f}"
        for w, e in zip(lv["weights_remaining_pct"], lv["best_epoch_mean"])
    )
    return row


def chance_pct_of(trials: pd.DataFrame) -> float:
    classes = trials["num_classes"].dropna()
    return 100.0 / float(classes.iloc[0]) if len(classes) else math.nan


def _select(frame: pd.DataFrame | None, keys: list[str], key: tuple) -> pd.DataFrame | None:
    if frame is None or frame.empty:
        return None
    for k, v in zip(keys, key):
        if k in frame:
            frame = frame[frame[k].isna()] if pd.isna(v) else frame[frame[k] == v]
    return frame


def summarize(
    trials: pd.DataFrame, levels: pd.DataFrame, vs_dense: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per group, i.e. per combination of the sweep's axes but the seed (groups with only
    incomplete trials too). `vs_dense`: compare.noninferiority's table (matches dense, gains)."""
    rows = []
    keys = group_keys(trials)
    per_trial = trials.drop_duplicates("trial")
    for key, g in per_trial.groupby(keys, sort=True, dropna=False):
        lv = levels
        for k, v in zip(keys, key):
            lv = lv[lv[k] == v] if not pd.isna(v) else lv[lv[k].isna()]
        row = _group_summary(keys, key, lv, chance_pct_of(g), _select(vs_dense, keys, key))
        first = g["control_index"].fillna(0) == 0 if "control_index" in g else True
        row["n_seeds"] = int(((g["status"] == COMPLETE) & first).sum())  # one per seed
        row["n_incomplete"] = int((g["status"] != COMPLETE).sum())
        rows.append(row)
    summary = pd.DataFrame.from_records(rows, columns=keys + SUMMARY_COLUMNS)
    return summary.astype({"n_seeds": "int64", "n_incomplete": "int64"})


def dense_band(trials: pd.DataFrame) -> Interval:
    """Dense (round 0) accuracy across seeds: per-seed mean over the given trials first, so trials
    that share a seed (same dense net under several criteria) count once."""
    rows = complete_rows(trials)
    per_seed = rows[rows["round"] == 0].groupby("seed")["acc_pct"].mean()
    return accuracy_interval(per_seed)
