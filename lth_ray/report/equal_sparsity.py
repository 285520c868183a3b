"""Curves at equal sparsity: every trial's accuracy on one common grid of weights remaining.

Pruning rounds are not sparsities: a criterion that prunes nothing in a round (stability when the
best and final weights coincide) falls behind the schedule, so at "round 14" its seeds may sit at
41%, 26% and 13% while magnitude sits at 4.5%. Comparisons therefore pair seeds at equal sparsity:
- The grid is the schedule's nominal levels: at round r, the weights remaining of the trials that
  have pruned in every round so far (they all agree; the median is taken against rounding noise).
- Each trial's accuracy is interpolated onto the grid linearly in log(weights remaining), only inside
  the range the trial reached: a grid point sparser than the trial's sparsest level (or denser than its
  densest) is "not reached" (NaN), never extrapolated. Rounds that retrained an unchanged mask are
  replicates of one sparsity and are averaged first.
- A trial whose criterion pruned nothing in any round (a one-shot stability seed whose dense round
  has best == final skips every level and stays dense) is not applicable: it reaches no pruned grid
  point, is excluded from every comparison, and is named in the verdict.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from lth_ray.report.stats import Interval, accuracy_interval
from lth_ray.report.tidy import axis_columns

REL_TOL = 1e-9  # a grid point within this relative distance of a trial's range counts as reached


def interpolate(weights: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """`values` logged at `weights` (percent remaining), linear in log(weights), read at `grid`;
    NaN outside the logged range. Replicates at one sparsity are averaged."""
    w = np.asarray(weights, dtype=float)
    v = np.asarray(values, dtype=float)
    g = np.asarray(grid, dtype=float)
    keep = np.isfinite(w) & np.isfinite(v) & (w > 0)
    w, v = w[keep], v[keep]
    out = np.full(g.shape, np.nan)
    if not len(w):
        return out
    levels, inverse = np.unique(w, return_inverse=True)  # ascending
    means = np.bincount(inverse, weights=v) / np.bincount(inverse)
    lo, hi = levels[0], levels[-1]
    inside = (g >= lo * (1 - REL_TOL)) & (g <= hi * (1 + REL_TOL))
    x = np.log(np.clip(g[inside], lo, hi))
    out[inside] = np.interp(x, np.log(levels), means)
    return out


def schedule_keys(table: pd.DataFrame) -> list[str]:
    """What fixes the nominal schedule: the prune rate and any other axis of the sweep."""
    return ["prune_rate", *axis_columns(table)]


def nominal_grid(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per schedule x round: the level a trial that prunes every round has at that round."""
    keys = schedule_keys(rows)
    out = []
    for key, g in rows.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("round")
        trial = [*[k for k in rows.columns if k in ("criterion", "schedule", "control")], "seed"]
        skipped = g.groupby(trial, dropna=False)["skipped"].cumsum().fillna(0)
        on_schedule = g[skipped == 0]
        for rnd, lv in on_schedule.groupby("round", sort=True):
            out.append((*key, int(rnd), float(lv["weights_remaining"].median())))
    return pd.DataFrame.from_records(out, columns=[*keys, "round", "weights_remaining_pct"])


def on_grid(rows: pd.DataFrame, group: list[str], value: str = "acc_pct") -> pd.DataFrame:
    """One row per trial (group x seed) x grid point: `value` interpolated (NaN: not reached),
    dense_pct (the trial's round 0 value), `applicable` (False: the trial never pruned)."""
    grid = nominal_grid(rows)
    keys = schedule_keys(rows)
    out = []
    for key, g in rows.groupby([*group, "seed"], sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ident = dict(zip([*group, "seed"], key))
        sel = grid
        for k in keys:
            v = ident[k] if k in ident else g[k].iloc[0]
            sel = sel[sel[k].isna()] if pd.isna(v) else sel[sel[k] == v]
        if sel.empty:
            continue
        acc = interpolate(g["weights_remaining"], g[value], sel["weights_remaining_pct"])
        dense = g.loc[g["round"] == 0, value]
        pruned = g[g["round"] >= 1]
        applicable = bool(pruned.empty or (pruned["skipped"].fillna(0) < 1).any())
        for (rnd, wr), a in zip(zip(sel["round"], sel["weights_remaining_pct"]), acc):
            out.append(
                {
                    **ident,
                    "round": int(rnd),
                    "weights_remaining_pct": float(wr),
                    value: float(a) if applicable or rnd == 0 else np.nan,
                    "dense_pct": float(dense.iloc[0]) if len(dense) else np.nan,
                    "applicable": applicable,
                }
            )
    columns = [*[*group, "seed"], "round", "weights_remaining_pct", value, "dense_pct"]
    return pd.DataFrame.from_records(out, columns=[*columns, "applicable"])


def not_applicable(points: pd.DataFrame, group: list[str]) -> list[str]:
    """'stability · one_shot · none: seed 2' for every trial that never pruned."""
    bad = points[~points["applicable"].astype(bool)].drop_duplicates([*group, "seed"])
    return [
        " · ".join(str(r[k]) for k in group if k not in ("prune_rate",)) + f": seed {r['seed']}"
        for _, r in bad.iterrows()
    ]


def grid_levels(
    rows: pd.DataFrame,
    group: list[str],
    value: str = "acc_pct",
    interval: Callable[[pd.Series], Interval] = accuracy_interval,
) -> pd.DataFrame:
    """One row per group x grid point: mean and 95% interval of `value` over the group's seeds at
    equal sparsity (what the figures draw as line and band). A point some applicable seed did not
    reach has no mean (NaN): averaging only the seeds that got there would favour them. `n` counts
    the seeds that reached it; seeds that never pruned are left out."""
    points = on_grid(rows, group, value)
    columns = [
        *group,
        "round",
        "weights_remaining_pct",
        "n",
        "n_seeds",
        "mean",
        "ci_low",
        "ci_high",
    ]
    if points.empty:
        return pd.DataFrame(columns=columns)
    points = points[points["applicable"].astype(bool)]
    out = []
    keys = [*group, "round", "weights_remaining_pct"]
    for key, g in points.groupby(keys, sort=True, dropna=False):
        reached = g[value].dropna()
        ci = interval(reached)
        full = len(reached) == g["seed"].nunique()
        mean, low, high = (ci.mean, ci.low, ci.high) if full else (np.nan, np.nan, np.nan)
        out.append((*key, len(reached), g["seed"].nunique(), mean, low, high))
    frame = pd.DataFrame.from_records(out, columns=columns)
    return frame.astype({"round": "int64", "n": "int64", "n_seeds": "int64"})
