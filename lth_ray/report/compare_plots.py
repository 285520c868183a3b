"""Figures of the paired comparisons: the difference between two arms at equal sparsity (the common
grid of weights remaining), with the simultaneous 95% interval over the comparison's levels
(Bonferroni) as a band and zero marked; a level whose band excludes 0 is a filled marker, the others
hollow, so marker and band always agree."""

from __future__ import annotations

import math

import pandas as pd
import seaborn as sns
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lth_ray.report.plots import STYLE, criterion_palette, format_weights_axis

Y_LABEL = "Difference in test accuracy (pp)"


def _draw(ax, frame: pd.DataFrame, line: str, palette: dict) -> None:
    ax.axhline(0.0, color="0.2", lw=1.0, zorder=1)
    for name, g in frame.groupby(line, sort=True):
        g = g.sort_values("weights_remaining_pct", ascending=False)
        color = palette.get(name, "0.3")
        x, y = g["weights_remaining_pct"], g["mean_diff_pp"]
        ax.plot(x, y, color=color, lw=1.6, label=str(name), gid=f"series:{name}")
        if g["ci_adj_low_pp"].notna().any():
            ax.fill_between(
                x, g["ci_adj_low_pp"], g["ci_adj_high_pp"], color=color, alpha=0.18, lw=0
            )
        sig = g["call"].isin(["better", "worse"])
        ax.scatter(x[sig], y[sig], color=color, s=22, zorder=3)
        ax.scatter(x[~sig], y[~sig], facecolors="white", edgecolors=[color], s=22, zorder=3)
    format_weights_axis(ax, list(frame["weights_remaining_pct"]))


def diff_figure(panels: list[tuple[str, pd.DataFrame]], line: str, title: str) -> Figure | None:
    panels = [(t, f) for t, f in panels if not f.empty]
    if not panels:
        return None
    names = sorted({str(v) for _, f in panels for v in f[line].unique()})
    palette = criterion_palette(names)
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    with rc_context(STYLE), sns.axes_style("whitegrid"):
        fig = Figure(figsize=(3.4 + 4.6 * ncols, 1.2 + 3.6 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        for ax, (t, f) in zip(axes.flat, panels):
            _draw(ax, f.assign(**{line: f[line].astype(str)}), line, palette)
            ax.set_title(t)
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel(Y_LABEL)
        handles = [Line2D([], [], color=palette[n], lw=1.6) for n in names]
        handles += [
            Line2D([], [], ls="", marker="o", color="0.3"),
            Line2D([], [], ls="", marker="o", markerfacecolor="white", color="0.3"),
        ]
        labels = [*names, "interval excludes 0", "inconclusive (interval includes 0)"]
        fig.legend(handles, labels, loc="outside right center", frameon=False)
        fig.suptitle(
            f"{title}, at equal sparsity\nband: 95% paired t-interval across seeds, simultaneous"
            " over the levels of each line (Bonferroni)",
            fontsize=12,
        )
    return fig


def _panels(frame: pd.DataFrame, by: list[str]) -> list[tuple[str, pd.DataFrame]]:
    by = [b for b in by if b in frame and frame[b].nunique(dropna=True) > 1]
    if not by:
        return [("", frame)]
    return [
        (" · ".join(f"{k}={v}" for k, v in zip(by, key if isinstance(key, tuple) else (key,))), g)
        for key, g in frame.groupby(by, sort=True, dropna=False)
    ]


def comparison_figures(comparisons: pd.DataFrame) -> dict[str, Figure]:
    c = comparisons
    if c.empty:
        return {}
    axes = [k for k in c.columns if "." in k] + ["prune_rate"]
    figs: dict[str, Figure | None] = {}
    controls = c[c["kind"] == "control"]
    figs["diff_ticket_vs_controls"] = diff_figure(
        _panels(controls, ["criterion", "schedule", *axes]),
        "b",
        "Ticket minus its control, paired by seed",
    )
    dense = c[c["kind"] == "dense"]
    if "control" in dense:
        dense = dense[dense["control"].fillna("none") == "none"]
    figs["diff_vs_dense"] = diff_figure(
        _panels(dense, ["schedule", *axes]), "criterion", "Level minus the dense net, same seed"
    )
    crit = c[c["kind"] == "criterion"].assign(pair=lambda d: d["a"] + " - " + d["b"])
    figs["diff_criteria"] = diff_figure(
        _panels(crit, ["schedule", *axes]), "pair", "Criterion A minus criterion B, paired by seed"
    )
    sched = c[c["kind"] == "schedule"]
    figs["diff_iterative_vs_oneshot"] = diff_figure(
        _panels(sched, axes), "criterion", "Iterative minus one-shot, paired by seed"
    )
    other = c[c["kind"] == "axis"].assign(pair=lambda d: d["comparison"].str.split(" \\(").str[0])
    figs["diff_axes"] = diff_figure(
        _panels(other, ["criterion"]), "pair", "One axis value minus another, paired by seed"
    )
    return {k: v for k, v in figs.items() if v is not None}
