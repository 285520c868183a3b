"""Paired comparisons at equal sparsity: arms that share seeds, compared on the same seeds.

For two arms A and B (a ticket and its control, criterion A and B, iterative and one-shot, two values
of a grid axis, or a level and the dense round of the same trial) every trial is first put on the
nominal sparsity grid (equal_sparsity: interpolated in log weights remaining, never extrapolated),
and d = acc_A - acc_B (test accuracy, percentage points) is taken per seed at equal sparsity.

- Primary test, one per comparison, pre-specified: the mean paired difference over a stated range of
  weights remaining, i.e. per seed the area between the two curves on log(weights remaining) divided
  by the width of the range (trapezoid rule over the grid points), then a paired t-test across seeds.
  The range is `primary_range` (default: every pruned grid level), narrowed to the levels every
  applicable seed of both arms reached; the narrowing is stated. Family: the comparisons of one
  question (kind), Bonferroni; the interval is simultaneous over that family.
- Secondary, per level: the paired t-interval of d at each grid level; family: the levels of one
  comparison, Bonferroni. The simultaneous interval at 1 - alpha/m and p_adj = min(1, m p) agree by
  construction: a level is better or worse exactly when its adjusted interval excludes 0.
- Minimal detectable difference: (t(1 - alpha/2m, n-1) + t(power, n-1)) * sd / sqrt(n), the true mean
  difference these seeds would detect with 80% power given the observed spread.
- Comparisons identical by construction are dropped: the dense level (every arm of one seed shares
  its dense net) and, for iterative vs one-shot, the first pruned level (both prune the dense net
  once to the same level with the same draws).
A level needs 2 paired seeds for an interval; repeated controls of one ticket are averaged per seed
first; a seed whose arm never pruned (equal_sparsity) is excluded and named.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from lth_ray.report.equal_sparsity import not_applicable, on_grid
from lth_ray.report.stats import CONFIDENCE, complete_rows, group_keys, per_seed

ALPHA = 1 - CONFIDENCE
POWER = 0.8
DEFAULT_MARGIN_PP = 1.0
QUESTIONS = ("control", "criterion", "schedule", "axis")  # primary families; "dense": see below
_WHAT = ["kind", "comparison", "a", "b", "group"]
_STATS = [
    "mean_diff_pp",
    "sd_pp",
    "ci_low_pp",
    "ci_high_pp",
    "t",
    "p",
    "m",
    "p_adj",
    "ci_adj_low_pp",
    "ci_adj_high_pp",
    "mdd_pp",
    "call",
]
COLUMNS = [*_WHAT, "round", "weights_remaining_pct", "n", "n_not_reached", *_STATS]
PRIMARY_COLUMNS = [
    *_WHAT,
    *("range_high_pct", "range_low_pct", "range_narrowed", "levels", "n"),
    *_STATS,
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


def mdd(sd: float, n: int, m: int = 1, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test at alpha/m detects with `power`,
    given the seeds' spread sd (the usual approximation; NaN below two seeds)."""
    if n < 2 or not np.isfinite(sd):
        return math.nan
    q = sps.t.ppf(1 - alpha / (2 * m), n - 1) + sps.t.ppf(power, n - 1)
    return float(q * sd / math.sqrt(n))


def adjust(rows: list[dict], alpha: float = ALPHA) -> None:
    """Bonferroni over `rows` (one family), in place: p_adj, the simultaneous interval, the call."""
    m = sum(1 for r in rows if np.isfinite(r["p"]))
    for r in rows:
        r["m"] = m
        r.update(p_adj=math.nan, ci_adj_low_pp=math.nan, ci_adj_high_pp=math.nan, mdd_pp=math.nan)
        if not np.isfinite(r["p"]):
            r["call"] = "too few seeds"
            continue
        se = r["sd_pp"] / math.sqrt(r["n"])
        half = float(sps.t.ppf(1 - alpha / (2 * m), r["n"] - 1)) * se
        low, high = r["mean_diff_pp"] - half, r["mean_diff_pp"] + half
        r.update(
            p_adj=min(1.0, m * r["p"]),
            ci_adj_low_pp=low,
            ci_adj_high_pp=high,
            mdd_pp=mdd(r["sd_pp"], r["n"], m, alpha),
            call="better" if low > 0 else "worse" if high < 0 else "inconclusive",
        )


def area_mean(weights: np.ndarray, diffs: np.ndarray) -> float:
    """Mean of a curve over log(weights remaining): trapezoid area / width (one point: itself)."""
    order = np.argsort(weights)
    x, y = np.log(np.asarray(weights, float)[order]), np.asarray(diffs, float)[order]
    if len(x) == 1:
        return float(y[0])
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


@dataclass
class Analysis:
    """Everything the verdict, the tables and the difference figures say about the paired arms."""

    levels: pd.DataFrame  # secondary: one row per comparison x grid level
    primary: pd.DataFrame  # one row per comparison
    noninferiority: pd.DataFrame  # one row per group x grid level: level - dense, margin
    not_applicable: list[str] = field(default_factory=list)
    margin_pp: float = DEFAULT_MARGIN_PP
    primary_range: tuple[float, float] | None = None
    max_seeds: int = 0
    seeds: pd.DataFrame = field(default_factory=pd.DataFrame)  # the paired d per seed and level


class _Series:
    """One comparison: arm `a` vs arm `b` (column filters), paired on `match` + seed + grid level."""

    def __init__(self, points: pd.DataFrame, kind, a, b, match, label, min_round) -> None:
        self.kind, self.a, self.b, self.match, self.label = kind, a, b, match, label
        self.min_round = min_round
        left, right = self._pick(points, a), self._pick(points, b)
        on = [*match, "seed", "round", "weights_remaining_pct"]
        self.both = (
            left.merge(right, on=on, suffixes=("_a", "_b"))
            if not (left.empty or right.empty)
            else pd.DataFrame()
        )

    def _pick(self, points: pd.DataFrame, filters: dict) -> pd.DataFrame:
        sel = points
        for k, v in filters.items():
            sel = sel[sel[k] == v]
        cols = [*self.match, "seed", "round", "weights_remaining_pct", "acc_pct", "applicable"]
        return sel[cols]

    def groups(self):
        if self.both.empty:
            return
        both = self.both[self.both["applicable_a"] & self.both["applicable_b"]]
        both = both[both["round"] >= self.min_round]
        if self.kind == "axis":  # an axis that leaves the dense net alone: round 0 is identical
            zero = both[(both["round"] == 0)]
            if len(zero) and (zero["acc_pct_a"] == zero["acc_pct_b"]).all():
                both = both[both["round"] > 0]
        for key, g in (
            both.groupby(self.match, sort=True, dropna=False) if self.match else [((), both)]
        ):
            key = key if isinstance(key, tuple) else (key,)
            yield dict(zip(self.match, key)), g.assign(d=g["acc_pct_a"] - g["acc_pct_b"])

    def head(self, ident: dict) -> dict:
        group = ", ".join(f"{k}={v}" for k, v in ident.items())
        return {
            "kind": self.kind,
            "comparison": f"{self.label} ({group})" if group else self.label,
            "a": _name(self.a),
            "b": _name(self.b),
            "group": group,
            **ident,
        }

    def level_rows(self) -> list[dict]:
        out = []
        for ident, g in self.groups():
            series = []
            for (rnd, wr), lv in g.groupby(["round", "weights_remaining_pct"], sort=True):
                ok = lv["d"].notna()
                series.append(
                    {
                        **self.head(ident),
                        "round": int(rnd),
                        "weights_remaining_pct": float(wr),
                        "n_not_reached": int((~ok).sum()),
                        **paired(lv.loc[ok, "d"]),
                    }
                )
            adjust(series)
            out += series
        return out

    def seed_rows(self) -> list[dict]:
        """Each seed's paired difference at each grid level it and its partner reached."""
        out = []
        for ident, g in self.groups():
            head = self.head(ident)
            for _, r in g[g["d"].notna()].iterrows():
                out.append({**head, "seed": r["seed"], "round": int(r["round"]),
                            "weights_remaining_pct": float(r["weights_remaining_pct"]),
                            "diff_pp": float(r["d"])})  # fmt: skip
        return out

    def primary_rows(self, wanted: tuple[float, float] | None) -> list[dict]:
        out = []
        for ident, g in self.groups():
            levels = g[["round", "weights_remaining_pct"]].drop_duplicates()
            if wanted is not None:
                hi, lo = max(wanted), min(wanted)
                w = levels["weights_remaining_pct"]
                levels = levels[(w <= hi * (1 + 1e-9)) & (w >= lo * (1 - 1e-9))]
            if levels.empty:
                continue
            full = levels["weights_remaining_pct"]
            wide = g.pivot_table(index="seed", columns="round", values="d", dropna=False)
            wide = wide.reindex(columns=sorted(levels["round"]))
            common = [r for r in wide.columns if wide[r].notna().all()]
            row = {**self.head(ident), "levels": len(common)}
            wr = levels.set_index("round")["weights_remaining_pct"]
            if common:
                per_seed = [area_mean(wr[common].to_numpy(), wide.loc[s, common].to_numpy())
                            for s in wide.index]  # fmt: skip
                row.update(
                    range_high_pct=float(wr[common].max()),
                    range_low_pct=float(wr[common].min()),
                    range_narrowed=len(common) < len(full),
                    **paired(per_seed),
                )
            else:
                row.update(range_narrowed=True, **paired([]))
            out.append(row)
        return out


def _name(filters: dict) -> str:
    return ", ".join(str(v) for v in filters.values())


def _series(rows: pd.DataFrame, points: pd.DataFrame, fixed: list[str]) -> list[_Series]:
    """Every paired comparison the sweep supports."""
    out: list[_Series] = []
    tickets = rows[rows["control"] == "none"]
    # ticket vs each control kind: same criterion, schedule and axes, same seed and sparsity
    for control in sorted(set(rows["control"]) - {"none"}):
        match = [k for k in fixed if k != "control"]
        out.append(_Series(points, "control", {"control": "none"}, {"control": control}, match,
                           f"ticket - {control}", 1))  # fmt: skip
    # criterion A vs B (tickets), and two values of any other axis
    axes = [k for k in fixed if k not in ("schedule", "control", "prune_rate")]
    for axis in axes:
        values = sorted(tickets[axis].dropna().unique(), key=str)
        match = [k for k in fixed if k not in (axis,)]
        for va, vb in itertools.combinations(values, 2):
            crit = axis == "criterion"
            out.append(_Series(
                points[points["control"] == "none"], "criterion" if crit else "axis",
                {axis: va}, {axis: vb}, match,
                f"{va} - {vb}" if crit else f"{axis}: {va} - {vb}", 1 if crit else 0,
            ))  # fmt: skip
    if {"iterative", "one_shot"} <= set(tickets["schedule"]):
        match = [k for k in fixed if k not in ("schedule",)]
        out.append(_Series(
            points[points["control"] == "none"], "schedule", {"schedule": "iterative"},
            {"schedule": "one_shot"}, match, "iterative - one-shot", 2,
        ))  # fmt: skip
    return out


def _dense_points(points: pd.DataFrame) -> pd.DataFrame:
    """Each trial's levels beside its own dense round, as two arms of one paired comparison."""
    return pd.concat(
        [
            points.assign(arm="level"),
            points.assign(arm="dense", acc_pct=points["dense_pct"], applicable=True),
        ],
        ignore_index=True,
    )


def noninferiority(levels: pd.DataFrame, margin_pp: float) -> pd.DataFrame:
    """Level - dense per group: a level matches dense when the lower bound of its 95% paired
    interval is above -margin. Tested in order of sparsity from the first pruned level, stopping at
    the first level that fails (a fixed sequence: no adjustment needed); `matches` marks that run."""
    d = levels[levels["kind"] == "dense"].copy()
    if d.empty:
        return d.assign(margin_pp=[], noninferior=[], matches=[])
    d["margin_pp"] = margin_pp
    d["noninferior"] = (d["n"] >= 2) & (d["ci_low_pp"] > -margin_pp)
    d = d.sort_values(["group", "round"])
    d["matches"] = d.groupby("group", sort=False)["noninferior"].cummin().astype(bool)
    return d.reset_index(drop=True)


def analyse(
    trials: pd.DataFrame,
    margin_pp: float = DEFAULT_MARGIN_PP,
    primary_range: tuple[float, float] | None = None,
) -> Analysis:
    """Every paired comparison the sweep supports, at equal sparsity."""
    keys = group_keys(trials)
    rows = per_seed(complete_rows(trials), keys)
    empty = Analysis(pd.DataFrame(columns=COLUMNS), pd.DataFrame(columns=PRIMARY_COLUMNS),
                     pd.DataFrame(), [], margin_pp, primary_range)  # fmt: skip
    if rows.empty:
        return empty
    fixed = [k for k in keys if rows[k].nunique(dropna=False) > 1 or k in ("criterion",)]
    points = on_grid(rows, keys)
    if points.empty:
        return empty
    series = _series(rows, points, fixed)
    dense = _Series(_dense_points(points), "dense", {"arm": "level"}, {"arm": "dense"}, fixed,
                    "level - dense", 1)  # fmt: skip
    level_rows = [r for s in [*series, dense] for r in s.level_rows()]
    primary_rows: list[dict] = []
    for kind in QUESTIONS:
        family = [r for s in series if s.kind == kind for r in s.primary_rows(primary_range)]
        adjust(family)
        primary_rows += family
    levels = _frame(level_rows, COLUMNS, int_cols=("round", "n", "n_not_reached", "m"))
    seeds = pd.DataFrame.from_records([r for s in [*series, dense] for r in s.seed_rows()])
    return Analysis(
        levels=levels,
        primary=_frame(primary_rows, PRIMARY_COLUMNS, int_cols=("n", "m", "levels")),
        noninferiority=noninferiority(levels, margin_pp),
        not_applicable=not_applicable(points, keys),
        margin_pp=margin_pp,
        primary_range=primary_range,
        max_seeds=int(rows["seed"].nunique()),
        seeds=seeds,
    )


def _frame(records: list[dict], columns: list[str], int_cols: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    extra = [c for c in frame.columns if c not in columns]
    frame = frame[columns[:5] + extra + columns[5:]]
    return frame.astype({c: "int64" for c in int_cols if c in frame})


def compare(trials: pd.DataFrame, **options) -> pd.DataFrame:
    """The per-level paired comparisons (secondary), one row per comparison x grid level."""
    return analyse(trials, **options).levels
