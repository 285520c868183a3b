"""Paired comparisons: arms that share seeds, compared level by level on the same seeds.

For two arms A and B (a ticket and its control, criterion A and B, iterative and one-shot, two values of
a grid axis, or a level and the dense round of the same trial) the difference d = acc_A - acc_B (test
accuracy, percentage points) is taken per seed at each level, then:
- mean, sample sd, and the 95% paired t-interval mean +- t(0.975, n-1) * sd / sqrt(n);
- a two-sided paired t-test p-value (H0: mean difference 0);
- Holm's step-down correction across the levels of one comparison (one series), so "significant at
  some level" keeps its 5% family-wise error rate.
A level needs at least 2 paired seeds for an interval or a p-value; with one, the difference is shown
alone. Repeated controls of one ticket are averaged per seed first. Levels are pruning rounds: both
arms of a comparison sit on the same sparsity grid (controls and one-shot by construction), except
where a criterion skipped rounds (stability when best == final): `weights_remaining_spread_pct`
says how far the paired trials' sparsities differ at that level, and the verdict mentions it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats as sps

from lth_ray.report.stats import CONFIDENCE, complete_rows, group_keys, per_seed

ALPHA = 0.05
COLUMNS = [
    "kind",
    "comparison",
    "a",
    "b",
    "group",
    "round",
    "weights_remaining_pct",
    "weights_remaining_spread_pct",
    "n",
    "mean_diff_pp",
    "sd_pp",
    "ci_low_pp",
    "ci_high_pp",
    "t",
    "p",
    "p_holm",
]


def paired(diffs: Iterable[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean, sd, t-interval, t and two-sided p of paired differences (NaN where n is too small)."""
    d = np.asarray([x for x in diffs if x is not None and np.isfinite(x)], dtype=float)
    n = len(d)
    out = dict.fromkeys(("mean_diff_pp", "sd_pp", "ci_low_pp", "ci_high_pp", "t", "p"), math.nan)
    out["n"] = n
    if n == 0:
        return out
    mean = float(d.mean())
    out["mean_diff_pp"] = mean
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * se
    out.update(sd_pp=sd, ci_low_pp=mean - half, ci_high_pp=mean + half)
    if se == 0.0:  # every seed differs by the same amount
        out.update(
            t=math.nan if mean == 0 else math.copysign(math.inf, mean), p=1.0 if mean == 0 else 0.0
        )
    else:
        t = mean / se
        out.update(t=t, p=float(2 * sps.t.sf(abs(t), n - 1)))
    return out


def holm(p_values: Iterable[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN; m counts the finite ones)."""
    p = list(p_values)
    finite = sorted((v, i) for i, v in enumerate(p) if v is not None and np.isfinite(v))
    m = len(finite)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * v))
        out[i] = running
    return out


def _series(
    rows: pd.DataFrame, kind: str, a: dict, b: dict, match: list[str], label: str, min_round: int
) -> list[dict]:
    """One comparison: arm `a` vs arm `b` (column filters), matched on `match` + seed + round."""

    def pick(filters: dict) -> pd.DataFrame:
        sel = rows
        for k, v in filters.items():
            sel = sel[sel[k] == v]
        return sel[[*match, "seed", "round", "acc_pct", "weights_remaining"]]

    left, right = pick(a), pick(b)
    if left.empty or right.empty:
        return []
    both = left.merge(right, on=[*match, "seed", "round"], suffixes=("_a", "_b"))
    both = both[both["round"] >= min_round]
    out = []
    for key, g in both.groupby(match, sort=True, dropna=False) if match else [((), both)]:
        key = key if isinstance(key, tuple) else (key,)
        group = ", ".join(f"{k}={v}" for k, v in zip(match, key))
        series = []
        for rnd, lv in g.groupby("round", sort=True):
            stats = paired(lv["acc_pct_a"] - lv["acc_pct_b"])
            series.append(
                {
                    "kind": kind,
                    "comparison": f"{label} ({group})" if group else label,
                    "a": _name(a),
                    "b": _name(b),
                    "group": group,
                    **dict(zip(match, key)),
                    "round": int(rnd),
                    "weights_remaining_pct": float(lv["weights_remaining_a"].mean()),
                    # seeds or arms at different sparsities (a criterion that skipped rounds)
                    "weights_remaining_spread_pct": float(
                        pd.concat([lv["weights_remaining_a"], lv["weights_remaining_b"]]).max()
                        - pd.concat([lv["weights_remaining_a"], lv["weights_remaining_b"]]).min()
                    ),
                    **stats,
                }
            )
        for row, adj in zip(series, holm(r["p"] for r in series)):
            row["p_holm"] = adj
        out += series
    return out


def _name(filters: dict) -> str:
    return ", ".join(str(v) for v in filters.values())


def compare(trials: pd.DataFrame) -> pd.DataFrame:
    """Every paired comparison the sweep supports, one row per comparison x level."""
    keys = group_keys(trials)
    rows = per_seed(complete_rows(trials), keys)
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    fixed = [k for k in keys if rows[k].nunique(dropna=False) > 1 or k in ("criterion",)]
    out: list[dict] = []
    tickets = rows[rows["control"] == "none"]
    # ticket vs each control kind: same criterion, schedule and axes, same seed and level
    for control in sorted(set(rows["control"]) - {"none"}):
        match = [k for k in fixed if k != "control"]
        out += _series(
            rows, "control", {"control": "none"}, {"control": control}, match,
            f"ticket - {control}", min_round=1,
        )  # fmt: skip
    # criterion A vs B (tickets), iterative vs one-shot, and two values of any other axis
    axes = [k for k in fixed if k not in ("schedule", "control", "prune_rate")]
    for axis in axes:
        values = sorted(tickets[axis].dropna().unique(), key=str)
        match = [k for k in fixed if k not in (axis, "control")]
        for va, vb in itertools.combinations(values, 2):
            out += _series(
                tickets, "criterion" if axis == "criterion" else "axis", {axis: va}, {axis: vb},
                match, f"{va} - {vb}" if axis == "criterion" else f"{axis}: {va} - {vb}",
                min_round=1 if axis == "criterion" else 0,
            )  # fmt: skip
    if {"iterative", "one_shot"} <= set(tickets["schedule"]):
        match = [k for k in fixed if k not in ("schedule", "control")]
        out += _series(
            tickets, "schedule", {"schedule": "iterative"}, {"schedule": "one_shot"}, match,
            "iterative - one-shot", min_round=1,
        )  # fmt: skip
    # every level vs the dense round of the same trial (same arm, same seed)
    dense = rows[rows["round"] == 0][[*fixed, "seed", "acc_pct"]]
    vs = rows.merge(dense.rename(columns={"acc_pct": "dense_pct"}), on=[*fixed, "seed"])
    both = pd.concat(
        [vs.assign(arm="level"), vs.assign(arm="dense", acc_pct=vs["dense_pct"])],
        ignore_index=True,
    )
    out += _series(
        both, "dense", {"arm": "level"}, {"arm": "dense"}, fixed, "level - dense", min_round=1
    )
    frame = pd.DataFrame.from_records(out)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[COLUMNS[:5] + extra + COLUMNS[5:]].astype({"round": "int64", "n": "int64"})
