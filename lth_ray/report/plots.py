"""Confidence-band figures in the style of Frankle & Carbin: x = % weights remaining, log scale,
dense (100%) on the left.

Lines and bands are drawn from the per-level table (stats.level_stats), so every plotted number is
one of summary/levels.csv's numbers: seaborn draws the lines (estimator=None, no bootstrap) and the
band is the t-interval fill. Figures are built on matplotlib Figure objects (no pyplot state), so
the report can run inside the sweep's process and in threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter

from lth_ray.report.stats import GROUP_KEYS, Interval, chance_pct_of, dense_band, fmt_level
from lth_ray.report.tidy import COMPLETE

PNG_DPI = 150
MAX_TICK_LABELS = 8
BAND_ALPHA = 0.2
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHED = {"one_shot", "reinit"}  # the baseline of a comparison is drawn dashed
VARIANT_COLORS = {
    "iterative": (0.1, 0.1, 0.1),
    "none": (0.1, 0.1, 0.1),
    "one_shot": (0.55, 0.55, 0.55),
    "reinit": (0.55, 0.55, 0.55),
}
SCHEDULE_LABELS = {"iterative": "iterative", "one_shot": "one-shot"}
CONTROL_LABELS = {"none": "winning ticket (original init)", "reinit": "random reinit (control)"}
ACC_LABEL = "Test accuracy (%)"
EPOCH_LABEL = "Early-stop epoch\n(epoch of min. validation loss)"
X_LABEL = "Weights remaining (%, log scale)"
STYLE = {
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
}


@dataclass
class Panel:
    """One axes: the levels to draw per hue value, and the incomplete trials' raw points."""

    title: str
    levels: pd.DataFrame  # rows of stats.level_stats with a `hue` column
    incomplete: pd.DataFrame  # rows of the tidy table with a `hue` column
    dense: Interval | None
    chance_pct: float


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
        wr = [v for v in g["weights_remaining_pct"] if np.isfinite(v)]
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
    inc = panel.incomplete
    col = y.replace("_mean_pct", "_pct").replace("_mean", "")
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
    ticks = tick_series(lv) or tick_series(
        inc.rename(columns={"weights_remaining": "weights_remaining_pct"})
    )
    format_weights_axis(ax, ticks, span)


def _legend(fig: Figure, axes, has_incomplete: bool) -> None:
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
    if has_incomplete:
        handles.append(Line2D([], [], ls="", marker="x", color="0.2", markersize=6))
        names.append("incomplete trial\n(not in mean)")
    fig.legend(handles, names, loc="outside right center", frameon=False)


def _has_data(panel: Panel) -> bool:
    return not panel.levels.empty or not panel.incomplete.empty


def _figure(
    panels: list[Panel],
    ncols: int,
    y: str,
    ylabel: str,
    title: str,
    palette: dict,
    labels: dict,
    reference: bool = True,
) -> Figure | None:
    if not any(_has_data(p) for p in panels):  # e.g. a sweep whose trials have no round yet
        return None
    nrows = math.ceil(len(panels) / ncols)
    with rc_context(STYLE), sns.axes_style("whitegrid"):
        fig = Figure(figsize=(3.4 + 4.8 * ncols, 1.0 + 3.9 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        span = [v for p in panels for v in _span(p)]
        for ax, panel in zip(axes.flat, panels):
            _draw_panel(ax, panel, y, palette, labels, reference, span)
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel)
        for ax in axes.flat[1 : len(panels)]:
            ax.set_ylabel("")
        if y.startswith("acc"):
            _acc_ylim(axes.flat[0], panels)
        _legend(fig, axes.flat[: len(panels)], any(not p.incomplete.empty for p in panels))
        fig.suptitle(title, fontsize=12)
    return fig


def _span(panel: Panel) -> list[float]:
    values = list(panel.levels["weights_remaining_pct"])
    values += list(panel.incomplete.get("weights_remaining", []))
    return [min(values), max(values)] if values else []


def _acc_ylim(ax, panels: list[Panel]) -> None:
    """Keep chance in view (collapse is the story) with a little headroom above the best line."""
    values = [
        v for p in panels for v in p.levels["acc_ci_high_pct"].fillna(p.levels["acc_mean_pct"])
    ]
    values += [v for p in panels for v in p.incomplete.get("acc_pct", [])]
    values += [p.dense.high if p.dense and np.isfinite(p.dense.high) else np.nan for p in panels]
    lows = [v for p in panels for v in p.levels["acc_ci_low_pct"].fillna(p.levels["acc_mean_pct"])]
    lows += [p.chance_pct for p in panels]
    top = max((v for v in values if np.isfinite(v)), default=math.nan)
    bottom = min((v for v in lows if np.isfinite(v)), default=math.nan)
    if np.isfinite(top) and np.isfinite(bottom):
        ax.set_ylim(max(0.0, bottom - 4), min(100.0, top + 4))


# ------------------------------------------------------------------------------------------------
# Subsets and palettes.


def _main(df: pd.DataFrame) -> pd.DataFrame:
    """The headline comparison: no control, iterative schedule when the sweep has it."""
    df = df[df["control"] == "none"]
    return df[df["schedule"] == "iterative"] if (df["schedule"] == "iterative").any() else df


def _select(df: pd.DataFrame, **eq) -> pd.DataFrame:
    for k, v in eq.items():
        df = df[df[k] == v]
    return df


def criterion_palette(criteria: Sequence[str]) -> dict:
    """Fixed colours by sorted name; seaborn's colorblind palette with its orange and vermillion
    kept apart (purple comes fourth), so four criteria stay easy to tell apart."""
    base = sns.color_palette("colorblind", 10)
    colors = [base[i] for i in (0, 1, 2, 4, 3, 5, 6, 7, 8, 9)]
    return {c: colors[i % len(colors)] for i, c in enumerate(sorted(criteria))}


def _rate_title(rate: float) -> str:
    return f"prune rate {rate * 100:g}% per round"


def _incomplete(trials: pd.DataFrame) -> pd.DataFrame:
    rows = trials[(trials["status"] != COMPLETE) & trials["round"].notna()].copy()
    rows["acc_pct"] = rows["test_acc"] * 100.0
    return rows


class FigureBuilder:
    """All report figures of one sweep; each method returns a Figure or None when not applicable."""

    def __init__(self, trials: pd.DataFrame, levels: pd.DataFrame, sweep: str) -> None:
        self.trials, self.levels, self.sweep = trials, levels, sweep
        self.inc = _incomplete(trials)
        self.criteria = sorted(trials["criterion"].dropna().unique())
        self.palette = criterion_palette(self.criteria)
        self.rates = sorted(trials["prune_rate"].dropna().unique())
        per_group = levels.groupby(GROUP_KEYS)["n"].max() if not levels.empty else pd.Series()
        self.max_seeds = int(per_group.max()) if len(per_group) else 0
        self.min_seeds = int(per_group.min()) if len(per_group) else 0

    def _panel(self, title: str, hue: str, **eq) -> Panel:
        trials = _select(self.trials, **eq)
        lv = _select(self.levels, **eq).assign(hue=lambda d: d[hue])
        inc = _select(self.inc, **eq).assign(hue=lambda d: d[hue])
        main = _main(trials) if hue not in ("control", "schedule") else trials
        return Panel(title, lv, inc, dense_band(main), chance_pct_of(trials))

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
        return f"{what} — sweep {self.sweep}\nlines: mean of complete trials; {band}"

    def _by_rate(self, hue_filter: dict, hue: str) -> list[Panel]:
        return [
            self._panel(
                _rate_title(r) if len(self.rates) > 1 else "", hue, prune_rate=r, **hue_filter
            )
            for r in self.rates
        ]

    def _main_filter(self) -> dict:
        m = _main(self.trials)
        return {} if m.empty else {"control": "none", "schedule": m["schedule"].iloc[0]}

    def accuracy(self) -> Figure | None:
        f = self._main_filter()
        if not f:
            return None
        panels = self._by_rate(f, "criterion")
        schedule = SCHEDULE_LABELS.get(f["schedule"], f["schedule"])
        return _figure(
            panels,
            len(panels),
            "acc_mean_pct",
            ACC_LABEL,
            self._subtitle(f"Test accuracy vs weights remaining ({schedule} pruning)"),
            self.palette,
            {},
        )

    def early_stop(self) -> Figure | None:
        f = self._main_filter()
        if not f:
            return None
        panels = self._by_rate(f, "criterion")
        return _figure(
            panels,
            len(panels),
            "best_epoch_mean",
            EPOCH_LABEL,
            self._subtitle("Early-stop epoch vs weights remaining"),
            self.palette,
            {},
            reference=False,
        )

    def _variant(
        self, column: str, value: str, labels: dict, colors: dict, what: str, base: dict
    ) -> Figure | None:
        crits = sorted(self.trials.loc[self.trials[column] == value, "criterion"].unique())
        if not crits:
            return None
        panels = [
            self._panel(
                f"{c}" + (f", {_rate_title(r)}" if len(self.rates) > 1 else ""),
                column,
                criterion=c,
                prune_rate=r,
                **base,
            )
            for c in crits
            for r in self.rates
        ]
        ncols = len(self.rates)  # rows = criteria, columns = prune rates
        if not all(_has_data(p) for p in panels):
            panels = [p for p in panels if _has_data(p)]
            ncols = min(len(panels), 3)
        if not panels:
            return None
        return _figure(
            panels, ncols, "acc_mean_pct", ACC_LABEL, self._subtitle(what), colors, labels
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

    def reinit(self) -> Figure | None:
        f = self._main_filter()
        return self._variant(
            "control",
            "reinit",
            CONTROL_LABELS,
            VARIANT_COLORS,
            "Winning ticket vs random reinitialisation",
            {"schedule": f.get("schedule", "iterative")},
        )

    def prune_rates(self) -> Figure | None:
        f = self._main_filter()
        if len(self.rates) < 2 or not f:
            return None
        cmap = sns.color_palette("viridis", as_cmap=True)
        colors = {
            r: cmap(x)[:3] for r, x in zip(self.rates, np.linspace(0.0, 0.75, len(self.rates)))
        }
        labels = {r: f"{r * 100:g}% per round" for r in self.rates}
        panels = [self._panel(c, "prune_rate", criterion=c, **f) for c in self.criteria]
        panels = [p for p in panels if _has_data(p)]
        return _figure(
            panels,
            min(len(panels), 3),
            "acc_mean_pct",
            ACC_LABEL,
            self._subtitle("Test accuracy by prune rate"),
            colors,
            labels,
        )

    def all(self) -> dict[str, Figure]:
        figs = {
            "accuracy_vs_weights": self.accuracy(),
            "early_stop_vs_weights": self.early_stop(),
            "iterative_vs_oneshot": self.schedule(),
            "ticket_vs_reinit": self.reinit(),
            "accuracy_by_prune_rate": self.prune_rates(),
        }
        return {k: v for k, v in figs.items() if v is not None}


def save_figure(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """PNG (dpi 150) and SVG; SVG without a date and with fixed ids, so reruns are identical."""
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    with rc_context({"svg.hashsalt": "lth_ray"}):
        fig.savefig(paths[0], dpi=PNG_DPI, metadata={"Software": None})
        fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
    return paths
