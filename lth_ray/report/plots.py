"""Confidence-band figures in the style of Frankle & Carbin: x = % weights remaining, log scale,
dense (100%) on the left.

Each complete trial is a thin line at its own weights remaining, under the mean and band. Means and
bands sit on the common sparsity grid the comparisons use (equal_sparsity.grid_levels: every seed
interpolated onto the schedule's nominal levels), so an arm whose seeds skip rounds is averaged at
equal sparsity, not at a round's mean sparsity; where every seed is on schedule they are the numbers
of levels.csv. Early-stop bands are clipped to the training budget the figure draws. Seaborn draws
the mean lines (estimator=None, no bootstrap) and the band is the t-interval fill. Figures are built
on matplotlib Figure objects (no pyplot state), so the report can run inside the sweep's process and
in threads.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter

from lth_ray.report.equal_sparsity import grid_levels
from lth_ray.report.stats import (
    Interval,
    accuracy_interval,
    budget_interval,
    chance_pct_of,
    complete_rows,
    dense_band,
    fmt_level,
    group_keys,
    per_seed,
)
from lth_ray.report.tidy import COMPLETE, axis_columns

PNG_DPI = 150
MAX_TICK_LABELS = 8
BAND_ALPHA = 0.2
TRIAL_STYLE = {"lw": 0.75, "alpha": 0.5, "marker": ".", "markersize": 3.0, "zorder": 1.5}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHED = {"one_shot", "reinit", "random_mask"}  # the baseline of a comparison is drawn dashed
VARIANT_COLORS = {
    "iterative": (0.1, 0.1, 0.1),
    "none": (0.1, 0.1, 0.1),
    "one_shot": (0.55, 0.55, 0.55),
    "reinit": (0.55, 0.55, 0.55),
    "random_mask": (0.80, 0.47, 0.65),
}
SCHEDULE_LABELS = {"iterative": "iterative", "one_shot": "one-shot"}
CONTROL_LABELS = {
    "none": "winning ticket",
    "reinit": "random reinit (control)",
    "random_mask": "random mask (control)",
}
ACC_LABEL = "Test accuracy (%)"
EPOCH_LABEL = "Early-stop epoch\n(epoch of min. validation loss)"
ITERATION_LABEL = "Early-stop iteration\n(iteration of min. validation loss)"
X_LABEL = "Weights remaining (%, log scale)"
STYLE = {
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
}


@dataclass
class Panel:
    """One axes: the levels to draw per hue value, each complete trial, and the incomplete trials'
    raw points."""

    title: str
    levels: pd.DataFrame  # the grid rows (FigureBuilder._grid) with a `hue` column
    incomplete: pd.DataFrame  # rows of the tidy table with a `hue` column
    dense: Interval | None
    chance_pct: float
    trials: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # complete rows, `hue`


def weight_ticks(
    levels: Sequence[float],
    max_labels: int = MAX_TICK_LABELS,
    span: tuple[float, float] | None = None,
) -> list[float]:
    """Actual levels, descending, thinned so that labels are at least 1/`max_labels` of the visible
    log range (`span`, default the levels' own range) apart; the sparsest level is always labelled."""
    lv = sorted({float(v) for v in levels if np.isfinite(v) and v > 0}, reverse=True)
    if len(lv) <= 1:
        return lv
    hi, lo = span if span else (lv[0], lv[-1])
    gap = math.log(hi / lo) / max_labels if hi > lo else 0.0
    ticks = [lv[0]]
    for v in lv[1:]:
        if math.log(ticks[-1] / v) >= gap * 0.999:
            ticks.append(v)
    if ticks[-1] != lv[-1]:
        if len(ticks) > 1 and math.log(ticks[-1] / lv[-1]) < 0.6 * gap:
            ticks[-1] = lv[-1]
        else:
            ticks.append(lv[-1])
    return ticks


def format_weights_axis(ax, levels: Sequence[float], span: Sequence[float] = ()) -> None:
    """Log x axis, reversed so that dense (100%) is on the left; ticks at the actual `levels`.

    `span` (optional) are further values the visible range must include: other series' levels, other
    panels' ranges (so panels of one figure share their x range), incomplete trials' points.
    """
    lv = [v for v in levels if np.isfinite(v) and v > 0]
    every = lv + [v for v in span if np.isfinite(v) and v > 0]
    ax.set_xscale("log")
    ax.set_xlabel(X_LABEL)
    if not every:
        return
    ax.set_xlim(max(every) * 1.12, min(every) / 1.12)
    ticks = weight_ticks(lv, span=(max(every), min(every)))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([fmt_level(t) for t in ticks]))
    ax.xaxis.set_minor_locator(FixedLocator(sorted(set(every))))
    ax.xaxis.set_minor_formatter(NullFormatter())


def tick_series(levels: pd.DataFrame) -> list[float]:
    """The levels of the series reaching sparsest (fewest levels on a tie): labelled ticks come from
    one series, so they are evenly spaced even when prune rates or schedules differ."""
    best: list[float] = []
    for _, g in levels.groupby("hue", sort=True):
        wr = sorted({float(v) for v in g["weights_remaining_pct"] if np.isfinite(v)}, reverse=True)
        if wr and (not best or (min(wr), len(wr)) < (min(best), len(best))):
            best = wr
    return best


def _draw_panel(
    ax, panel: Panel, y: str, palette: dict, labels: dict, reference: bool, span: list[float]
) -> None:
    lv = panel.levels
    alpha = BAND_ALPHA if lv["hue"].nunique() <= 2 else BAND_ALPHA * 0.65
    lo, hi = (y.replace("_mean", "_ci_low"), y.replace("_mean", "_ci_high"))
    hues = [h for h in palette if h in set(lv["hue"])]
    if reference and panel.dense is not None and np.isfinite(panel.dense.mean):
        d = panel.dense
        if np.isfinite(d.low):
            ax.axhspan(
                d.low,
                d.high,
                color="0.55",
                alpha=0.2,
                lw=0,
                zorder=0,
                label="dense (round 0): 95% CI",
            )
        ax.axhline(d.mean, color="0.45", ls="-", lw=0.9, zorder=1, label="dense (round 0): mean")
    if reference and np.isfinite(panel.chance_pct):
        ax.axhline(
            panel.chance_pct,
            color="0.15",
            ls=":",
            lw=1.3,
            zorder=1,
            label=f"chance ({panel.chance_pct:.0f}%)",
        )
    if hues:
        sns.lineplot(
            data=lv[lv["hue"].isin(hues)],
            x="weights_remaining_pct",
            y=y,
            hue="hue",
            hue_order=hues,
            palette=palette,
            estimator=None,
            errorbar=None,
            sort=False,
            marker="o",
            markersize=4.5,
            linewidth=1.8,
            legend=False,
            ax=ax,
        )
        for line in ax.get_lines():  # name seaborn's lines after their hue (legend, tests)
            for h in hues:
                if line.get_label().startswith("_child") and np.allclose(
                    line.get_color()[:3], palette[h][:3]
                ):
                    line.set_label(labels.get(h, str(h)))
                    line.set_gid(f"series:{h}")
                    i = hues.index(h)  # shapes and shrinking sizes keep coinciding series visible
                    line.set_marker(MARKERS[i % len(MARKERS)])
                    line.set_markersize(max(7.0 - 1.0 * i, 3.5))
                    if h in DASHED:
                        line.set_linestyle((0, (4, 2)))
        for h in hues:
            g = lv[lv["hue"] == h]
            if g[lo].notna().any():
                band = ax.fill_between(
                    g["weights_remaining_pct"],
                    g[lo],
                    g[hi],
                    color=palette[h],
                    alpha=alpha,
                    lw=0,
                )
                band.set_gid(f"band:{h}")
    col = y.replace("_mean_pct", "_pct").replace("_mean", "")
    _draw_trials(ax, panel.trials, col, palette, faint=len(hues) > 2)
    inc = panel.incomplete
    if not inc.empty and col in inc:
        for h, g in inc.groupby("hue"):
            pts = ax.scatter(
                g["weights_remaining"],
                g[col],
                marker="x",
                s=28,
                lw=1.2,
                color=palette.get(h, "0.3"),
                zorder=3,
            )
            pts.set_gid(f"incomplete:{h}")
            if h not in hues:  # no line names this colour: the markers carry the name
                pts.set_label(labels.get(h, str(h)))
    ax.set_title(panel.title)
    # labelled ticks reach as far as any line: a trial may go sparser than its group's mean
    cols, raw = ["hue", "weights_remaining_pct"], {"weights_remaining": "weights_remaining_pct"}
    seen = pd.concat(
        [lv.reindex(columns=cols), panel.trials.rename(columns=raw).reindex(columns=cols)]
    )
    ticks = tick_series(seen) or tick_series(inc.rename(columns=raw))
    format_weights_axis(ax, ticks, span)


def _draw_trials(ax, trials: pd.DataFrame, col: str, palette: dict, faint: bool = False) -> None:
    """One thin line per complete trial at its own weights remaining, in round order (a round that
    retrained an unchanged mask stays at its sparsity). Labelled `_trial:<hue>:<trial>`: no legend
    entry of its own, and the series' gids stay one per mean line. `faint`: lighter, for panels
    with many series."""
    if trials.empty or col not in trials:
        return
    for (h, trial), g in trials.groupby(["hue", "trial"], sort=True):
        g = g.sort_values("round")
        if g[col].notna().any():
            ax.plot(
                g["weights_remaining"],
                g[col],
                color=palette.get(h, "0.3"),
                ls=(0, (4, 2)) if h in DASHED else "-",
                label=f"_trial:{h}:{trial}",
                **{**TRIAL_STYLE, "alpha": TRIAL_STYLE["alpha"] * (0.6 if faint else 1.0)},
            )


def _legend(fig: Figure, axes, has_incomplete: bool, has_trials: bool = False) -> None:
    """One legend for the whole figure, outside the panels so it hides no data: series first."""
    seen: dict[str, object] = {}
    series, refs = [], []
    for ax in axes:
        for h, name in zip(*ax.get_legend_handles_labels()):
            if name not in seen:
                seen[name] = h
                gid = str(h.get_gid())
                (series if gid.startswith(("series:", "incomplete:")) else refs).append(name)
    names = series + refs
    handles = [seen[n] for n in names]
    if has_trials:
        handles.append(Line2D([], [], color="0.3", **{**TRIAL_STYLE, "zorder": 1}))
        names.append("one complete trial\n(own sparsity)")
    if has_incomplete:
        handles.append(Line2D([], [], ls="", marker="x", color="0.2", markersize=6))
        names.append("incomplete trial\n(not in mean)")
    fig.legend(handles, names, loc="outside right center", frameon=False)


def _has_data(panel: Panel) -> bool:
    return not (panel.levels.empty and panel.incomplete.empty and panel.trials.empty)


def _figure(
    panels: list[Panel],
    ncols: int,
    y: str,
    ylabel: str,
    title: str,
    palette: dict,
    labels: dict,
    reference: bool = True,
    budget: tuple[float, str] | None = None,
) -> Figure | None:
    """`budget`: (value, unit) of the training budget, drawn as a reference line (early stop)."""
    if not any(_has_data(p) for p in panels):  # e.g. a sweep whose trials have no round yet
        return None
    nrows = math.ceil(len(panels) / ncols)
    with rc_context(STYLE), sns.axes_style("whitegrid"):
        fig = Figure(figsize=(3.4 + 4.8 * ncols, 1.0 + 3.9 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        span = [v for p in panels for v in _span(p)]
        for ax, panel in zip(axes.flat, panels):
            _draw_panel(ax, panel, y, palette, labels, reference, span)
            if budget is not None:
                ax.axhline(budget[0], color="0.35", ls=(0, (1, 2)), lw=1.2, zorder=1,
                           label=f"training budget ({budget[0]:g} {budget[1]})")  # fmt: skip
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel)
        for ax in axes.flat[1 : len(panels)]:
            ax.set_ylabel("")
        if y.startswith("acc"):
            _acc_ylim(axes.flat[0], panels)
        _legend(
            fig,
            axes.flat[: len(panels)],
            any(not p.incomplete.empty for p in panels),
            any(not p.trials.empty for p in panels),
        )
        fig.suptitle(title, fontsize=12)
    return fig


def _span(panel: Panel) -> list[float]:
    values = list(panel.levels["weights_remaining_pct"])
    values += list(panel.incomplete.get("weights_remaining", []))
    values += list(panel.trials.get("weights_remaining", []))
    return [min(values), max(values)] if values else []


def _acc_ylim(ax, panels: list[Panel]) -> None:
    """Fit the axis to the data (bands, dense band, each trial, incomplete points) so that effects of
    a point or two stay visible; the chance line stays only when it falls inside that range."""
    values = [
        v for p in panels for v in p.levels["acc_ci_high_pct"].fillna(p.levels["acc_mean_pct"])
    ]
    values += [v for p in panels for v in p.incomplete.get("acc_pct", [])]
    values += [v for p in panels for v in p.trials.get("acc_pct", [])]
    values += [p.dense.high if p.dense and np.isfinite(p.dense.high) else np.nan for p in panels]
    lows = [v for p in panels for v in p.levels["acc_ci_low_pct"].fillna(p.levels["acc_mean_pct"])]
    lows += [v for p in panels for v in p.incomplete.get("acc_pct", [])]
    lows += [v for p in panels for v in p.trials.get("acc_pct", [])]
    lows += [p.dense.low if p.dense and np.isfinite(p.dense.low) else np.nan for p in panels]
    top = max((v for v in values if np.isfinite(v)), default=math.nan)
    bottom = min((v for v in lows if np.isfinite(v)), default=math.nan)
    if np.isfinite(top) and np.isfinite(bottom):
        pad = max(0.5, 0.06 * (top - bottom))
        lo, hi = max(0.0, bottom - pad), min(100.0, top + pad)
        ax.set_ylim(lo, hi)
        for a in ax.figure.axes:  # panels share y: drop a chance line no panel can show
            for line in list(a.get_lines()):
                if str(line.get_label()).startswith("chance") and not (
                    lo <= line.get_ydata()[0] <= hi
                ):
                    line.remove()


# ------------------------------------------------------------------------------------------------
# Subsets and palettes.


def _most(rows: pd.DataFrame, column: str) -> float:
    """The largest value of a column (the training budget), NaN when not logged."""
    values = pd.to_numeric(rows.get(column, pd.Series(dtype=float)), errors="coerce")
    return float(values.max()) if values.notna().any() else math.nan


def _main(df: pd.DataFrame) -> pd.DataFrame:
    """The headline comparison: no control, iterative schedule when the sweep has it."""
    df = df[df["control"] == "none"]
    return df[df["schedule"] == "iterative"] if (df["schedule"] == "iterative").any() else df


def _select(df: pd.DataFrame, **eq) -> pd.DataFrame:
    for k, v in eq.items():
        df = df[df[k] == v]
    return df


def distinct_colors(n: int = 10) -> list[tuple]:
    """Colours far apart: seaborn's colorblind palette with its orange and vermillion kept apart
    (purple comes fourth); past ten, evenly spaced hues."""
    if n > 10:
        return sns.color_palette("husl", n)
    base = sns.color_palette("colorblind", 10)
    return [base[i] for i in (0, 1, 2, 4, 3, 5, 6, 7, 8, 9)]


def criterion_palette(criteria: Sequence[str]) -> dict:
    """Fixed colours by sorted name, so four criteria stay easy to tell apart."""
    colors = distinct_colors()
    return {c: colors[i % len(colors)] for i, c in enumerate(sorted(criteria))}


def _rate_title(rate: float) -> str:
    return f"prune rate {rate * 100:g}% per round"


def _incomplete(trials: pd.DataFrame) -> pd.DataFrame:
    rows = trials[(trials["status"] != COMPLETE) & trials["round"].notna()].copy()
    rows["acc_pct"] = rows["test_acc"] * 100.0
    return rows


def _natural(value) -> tuple:
    """Sort key: numbers by value, rewind points as 'init' < '1ep' < '2ep', then text."""
    text = str(value)
    if text == "init":
        return (0, -1.0, "")
    m = re.match(r"^(\d+)(ep|it)$", text)
    if m:
        return (0, float(m.group(1)), m.group(2))
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def _sort_values(values) -> list:
    """Axis values in a natural order (0.125 < 0.25 < 1; init < 1ep < 2ep)."""
    return sorted((v for v in dict.fromkeys(values) if not pd.isna(v)), key=_natural)


def facet_title(facet: dict) -> str:
    """'prune rate 20% per round · prune.rewind = 1ep'."""
    parts = []
    for k, v in facet.items():
        if k == "prune_rate":
            parts.append(_rate_title(v))
        elif k == "criterion":
            parts.append(str(v))
        else:
            parts.append(f"{k} = {v}")
    return " · ".join(parts)


class FigureBuilder:
    """All report figures of one sweep; each method returns a Figure or None when not applicable.

    Every figure draws one line per value of a compared axis (the hue: the criterion by default) and
    one panel per combination of the other axes that vary in the sweep (prune rate, rewind point,
    width, ...), so a sweep over any fields is shown without special cases.
    """

    def __init__(
        self, trials: pd.DataFrame, levels: pd.DataFrame, sweep: str, hue: str = "criterion"
    ) -> None:
        self.trials, self.levels, self.sweep = trials, levels, sweep
        self.inc = _incomplete(trials)
        self.complete = complete_rows(trials)
        self.budget = {u: _most(self.complete, u) for u in ("epochs", "iterations")}
        self.grid = self._grid()
        self.criteria = sorted(trials["criterion"].dropna().unique())
        self.palette = criterion_palette(self.criteria)
        self.rates = sorted(trials["prune_rate"].dropna().unique())
        self.axes = axis_columns(trials)
        # the axes a figure can compare or facet by: those with more than one value in the sweep
        self.varying = [
            k for k in ["criterion", "prune_rate", *self.axes] if trials[k].nunique() > 1
        ]
        if hue not in trials.columns:
            known = ", ".join(["criterion", "prune_rate", *self.axes])
            raise ValueError(f"--hue {hue!r}: not an axis of this sweep (axes: {known})")
        self.hue = hue
        keys = group_keys(levels) if not levels.empty else []
        per_group = levels.groupby(keys)["n"].max() if not levels.empty else pd.Series()
        self.max_seeds = int(per_group.max()) if len(per_group) else 0
        self.min_seeds = int(per_group.min()) if len(per_group) else 0

    def _grid(self) -> pd.DataFrame:
        """Accuracy and early stop of every group on the common sparsity grid, named as in
        levels.csv; early-stop bands clipped to the budget the figure draws."""
        keys = group_keys(self.trials)
        rows = per_seed(self.complete, keys)
        on = [*keys, "round", "weights_remaining_pct"]
        stats = (
            ("acc_pct", ("acc_mean_pct", "acc_ci_low_pct", "acc_ci_high_pct"), accuracy_interval),
            ("best_epoch", ("best_epoch_mean", "best_epoch_ci_low", "best_epoch_ci_high"),
             partial(budget_interval, low=1.0, budget=self.budget["epochs"])),
            ("best_iteration", ("best_iteration_mean", "best_iteration_ci_low",
                                "best_iteration_ci_high"),
             partial(budget_interval, low=0.0, budget=self.budget["iterations"])),
        )  # fmt: skip
        frame = pd.DataFrame(columns=on)
        for value, names, interval in stats:
            if not rows.empty and value in rows and rows[value].notna().any():
                g = grid_levels(rows, keys, value, interval).drop(columns=["n", "n_seeds"])
                g = g.rename(columns=dict(zip(("mean", "ci_low", "ci_high"), names)))
                frame = g if frame.empty else frame.merge(g, on=on, how="outer")
        return frame.reindex(columns=[*on, *(n for _, names, _ in stats for n in names)])

    def _panel(self, title: str, hue: str, y: str = "acc_mean_pct", **eq) -> Panel:
        """Means and bands of `y` on the common sparsity grid, where every seed reached."""
        trials = _select(self.trials, **eq)
        lv = _select(self.grid, **eq).assign(hue=lambda d: d[hue])
        lv = lv[lv[y].notna()] if y in lv else lv.iloc[:0]  # not reached: the trials' lines show it
        inc = _select(self.inc, **eq).assign(hue=lambda d: d[hue])
        done = _select(self.complete, **eq).assign(hue=lambda d: d[hue])
        main = _main(trials) if hue not in ("control", "schedule") else trials
        return Panel(title, lv, inc, dense_band(main), chance_pct_of(trials), done)

    def _subtitle(self, what: str) -> str:
        if self.max_seeds == 0:
            return f"{what} — sweep {self.sweep}\nno complete trial yet: incomplete trials only"
        n = (
            f"{self.min_seeds}"
            if self.min_seeds == self.max_seeds
            else f"{self.min_seeds}-{self.max_seeds}"
        )
        band = (
            f"bands: 95% t-interval across n={n} seeds"
            if self.max_seeds > 1
            else "1 seed: no bands"
        )
        where = "at equal sparsity, at levels every seed reached"
        return (
            f"{what} — sweep {self.sweep}\nthick: mean {where}; thin: each complete trial\n{band}"
        )

    def _facets(self, exclude: set[str], base: dict, having: dict | None = None) -> list[dict]:
        """Every combination of the varying axes not in `exclude` that has trials under `base`
        (and under `having` too, e.g. only the criteria that have controls)."""
        keys = [k for k in self.varying if k not in exclude]
        rows = _select(self.trials, **base, **(having or {}))
        if not keys:
            return [{}]
        combos = rows[keys].drop_duplicates()
        order = {k: _sort_values(rows[k]) for k in keys}
        facets = [dict(zip(keys, c)) for c in combos.itertuples(index=False)]
        return sorted(facets, key=lambda f: [order[k].index(f[k]) for k in keys])

    def _panels(self, hue: str, base: dict, y: str) -> list[Panel]:
        return [self._panel(facet_title(f), hue, y, **base, **f) for f in self._facets({hue}, base)]

    def _hue_palette(self, hue: str) -> tuple[dict, dict]:
        if hue == "criterion":
            return self.palette, {}
        values = _sort_values(self.trials[hue])
        cmap = sns.color_palette("viridis", as_cmap=True)
        colors = {v: cmap(x)[:3] for v, x in zip(values, np.linspace(0.0, 0.8, len(values)))}
        if hue == "prune_rate":
            return colors, {r: f"{r * 100:g}% per round" for r in values}
        return colors, {v: f"{hue} = {v}" for v in values}

    def _main_filter(self) -> dict:
        m = _main(self.trials)
        return {} if m.empty else {"control": "none", "schedule": m["schedule"].iloc[0]}

    @staticmethod
    def _ncols(panels: list[Panel]) -> int:
        return min(len(panels), 3)

    def _compare(
        self, hue: str, y: str, label: str, what: str, reference: bool = True, budget=None
    ):
        f = self._main_filter()
        if not f:
            return None
        panels = [p for p in self._panels(hue, f, y) if _has_data(p)]
        if not panels:
            return None
        colors, labels = self._hue_palette(hue)
        return _figure(
            panels,
            self._ncols(panels),
            y,
            label,
            self._subtitle(what),
            colors,
            labels,
            reference=reference,
            budget=budget,
        )

    def accuracy(self) -> Figure | None:
        f = self._main_filter()
        schedule = SCHEDULE_LABELS.get(f.get("schedule"), f.get("schedule"))
        return self._compare(
            self.hue,
            "acc_mean_pct",
            ACC_LABEL,
            f"Test accuracy vs weights remaining ({schedule} pruning)",
        )

    def early_stop(self) -> Figure | None:
        """In iterations when the sweep counts in iterations (Frankle & Carbin), else in epochs."""
        units = set(self.trials["steps_unit"].dropna()) if "steps_unit" in self.trials else set()
        if units == {"it"} and self.levels["best_iteration_mean"].notna().any():
            y, label, what = "best_iteration_mean", ITERATION_LABEL, "Early-stop iteration"
            unit = "iterations"
        else:
            y, label, what = "best_epoch_mean", EPOCH_LABEL, "Early-stop epoch"
            unit = "epochs"
        budget = (self.budget[unit], unit) if np.isfinite(self.budget[unit]) else None
        return self._compare(
            self.hue, y, label, f"{what} vs weights remaining", reference=False, budget=budget
        )

    def _variant(
        self, column: str, value: str, labels: dict, colors: dict, what: str, base: dict
    ) -> Figure | None:
        if not (self.trials[column] == value).any():
            return None
        facets = self._facets({column}, base, having={column: value})
        panels = [self._panel(facet_title(f), column, **base, **f) for f in facets]
        panels = [p for p in panels if _has_data(p)]
        if not panels:
            return None
        return _figure(
            panels,
            self._ncols(panels),
            "acc_mean_pct",
            ACC_LABEL,
            self._subtitle(what),
            colors,
            labels,
        )

    def schedule(self) -> Figure | None:
        return self._variant(
            "schedule",
            "one_shot",
            SCHEDULE_LABELS,
            VARIANT_COLORS,
            "Iterative vs one-shot pruning",
            {"control": "none"},
        )

    def controls(self) -> Figure | None:
        f = self._main_filter()
        if not (self.trials["control"] != "none").any():
            return None
        return self._variant(
            "control",
            next(c for c in self.trials["control"] if c != "none"),
            CONTROL_LABELS,
            VARIANT_COLORS,
            "Winning ticket vs controls",
            {"schedule": f.get("schedule", "iterative")},
        )

    def by_axis(self, axis: str) -> Figure | None:
        """One line per value of a varying axis other than the hue (prune rate, rewind, width)."""
        if axis == self.hue or axis not in self.varying:
            return None
        return self._compare(
            axis, "acc_mean_pct", ACC_LABEL, f"Test accuracy by {_axis_name(axis)}"
        )

    def all(self) -> dict[str, Figure]:
        if not self.levels.empty and self.levels["round"].max() == 0:
            return {}  # dense-only sweeps (e.g. the precision study): the summary holds the numbers
        figs = {
            "accuracy_vs_weights": self.accuracy(),
            "early_stop_vs_weights": self.early_stop(),
            "iterative_vs_oneshot": self.schedule(),
            "ticket_vs_controls": self.controls(),
        }
        for axis in ["criterion", "prune_rate", *self.axes]:
            name = re.sub(r"[^A-Za-z0-9]+", "_", _axis_name(axis))
            figs[f"accuracy_by_{name}"] = self.by_axis(axis)
        return {k: v for k, v in figs.items() if v is not None}


def _axis_name(axis: str) -> str:
    return "prune rate" if axis == "prune_rate" else axis


def save_figure(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """PNG (dpi 150) and SVG; SVG without a date and with fixed ids, so reruns are identical."""
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    with rc_context({"svg.hashsalt": "lth_ray"}):
        fig.savefig(paths[0], dpi=PNG_DPI, metadata={"Software": None})
        fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
    return paths
