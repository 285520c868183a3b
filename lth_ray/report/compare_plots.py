"""Figures of the paired comparisons: the difference between two arms at equal sparsity (the common
grid of weights remaining), with the simultaneous 95% interval over the comparison's levels
(Bonferroni) as a band and zero marked; a level whose band excludes 0 is a filled marker, the others
hollow, so marker and band always agree. Each seed's own difference is a thin line under the mean.

The y axis is fitted to the differences themselves (the seeds, the means and zero), not to the
widest band: with two seeds a Bonferroni band can span tens of points and would flatten every other
line. A band that runs past the axis is cut there and a triangle at the edge says so."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lth_ray.report.plots import STYLE, TRIAL_STYLE, criterion_palette, format_weights_axis

Y_LABEL = "Difference in test accuracy (pp)"
BAND_ROOM = 3.0  # a band may reach this many data spans beyond the differences before it is cut


def _draw(ax, frame: pd.DataFrame, seeds: pd.DataFrame, line: str, palette: dict) -> None:
    ax.axhline(0.0, color="0.2", lw=1.0, zorder=1)
    for name, g in frame.groupby(line, sort=True):
        g = g.sort_values("weights_remaining_pct", ascending=False)
        color = palette.get(name, "0.3")
        x, y = g["weights_remaining_pct"], g["mean_diff_pp"]
        ax.plot(x, y, color=color, lw=1.8, label=str(name), gid=f"series:{name}", zorder=2.5)
        if g["ci_adj_low_pp"].notna().any():
            band = ax.fill_between(
                x, g["ci_adj_low_pp"], g["ci_adj_high_pp"], color=color, alpha=0.18, lw=0
            )
            band.set_gid(f"band:{name}")
        sig = g["call"].isin(["better", "worse"])
        ax.scatter(x[sig], y[sig], color=color, s=22, zorder=3)
        ax.scatter(x[~sig], y[~sig], facecolors="white", edgecolors=[color], s=22, zorder=3)
        own = seeds[seeds[line] == name] if not seeds.empty else seeds
        for seed, s in own.groupby("seed", sort=True) if not own.empty else []:
            s = s.sort_values("weights_remaining_pct", ascending=False)
            ax.plot(s["weights_remaining_pct"], s["diff_pp"], color=color,
                    label=f"_seed:{name}:{seed}", **TRIAL_STYLE)  # fmt: skip
    format_weights_axis(ax, list(frame["weights_remaining_pct"]))


def _fit_y(axes, panels) -> bool:
    """Fit the shared y axis to the seeds' and the mean differences and zero; returns whether some
    band was cut (its ends are then marked with triangles at the edge)."""
    core = [0.0]
    for _, f, s in panels:
        core += [v for v in f["mean_diff_pp"] if np.isfinite(v)]
        if not s.empty:
            core += [v for v in s["diff_pp"] if np.isfinite(v)]
    lo, hi = min(core), max(core)
    span = max(hi - lo, 1.0)
    lows = [v for _, f, _ in panels for v in f["ci_adj_low_pp"] if np.isfinite(v)]
    highs = [v for _, f, _ in panels for v in f["ci_adj_high_pp"] if np.isfinite(v)]
    bottom = max(min([lo, *lows]), lo - BAND_ROOM * span)
    top = min(max([hi, *highs]), hi + BAND_ROOM * span)
    pad = max(0.05 * (top - bottom), 0.1 * span)
    bottom, top = bottom - pad, top + pad
    cut = False
    for ax, (_, f, _) in zip(axes, panels):
        ax.set_ylim(bottom, top)
        for name, g in f.groupby("line", sort=True):
            color = g["color"].iloc[0]
            for col, edge, marker in (("ci_adj_high_pp", top, "^"), ("ci_adj_low_pp", bottom, "v")):
                past = g[(g[col] > top) if marker == "^" else (g[col] < bottom)]
                if len(past):
                    cut = True
                    ax.scatter(past["weights_remaining_pct"], [edge] * len(past), marker=marker,
                               s=30, color=color, clip_on=False, zorder=4,
                               gid=f"cut:{name}")  # fmt: skip
    return cut


def diff_figure(
    panels: list[tuple[str, pd.DataFrame, pd.DataFrame]], line: str, title: str
) -> Figure | None:
    """`panels`: (title, the comparisons' rows, the seeds' rows) per panel; `line`: the column
    naming a line (one per comparison of the panel)."""
    panels = [(t, f, s) for t, f, s in panels if not f.empty]
    if not panels:
        return None
    names = sorted({str(v) for _, f, _ in panels for v in f[line].unique()})
    palette = criterion_palette(names)
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    panels = [
        (
            t,
            f.assign(line=f[line].astype(str), color=f[line].astype(str).map(palette)),
            s.assign(**{line: s[line].astype(str)}) if not s.empty else s,
        )
        for t, f, s in panels
    ]
    with rc_context(STYLE), sns.axes_style("whitegrid"):
        fig = Figure(figsize=(3.4 + 4.6 * ncols, 1.2 + 3.6 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        for ax, (t, f, s) in zip(axes.flat, panels):
            _draw(ax, f.assign(**{line: f["line"]}), s, line, palette)
            ax.set_title(t)
        cut = _fit_y(axes.flat, panels)
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel(Y_LABEL)
        handles = [Line2D([], [], color=palette[n], lw=1.8) for n in names]
        labels = list(names)
        if any(not s.empty for _, _, s in panels):
            handles.append(Line2D([], [], color="0.3", **{**TRIAL_STYLE, "zorder": 1}))
            labels.append("one seed's difference")
        handles += [
            Line2D([], [], ls="", marker="o", color="0.3"),
            Line2D([], [], ls="", marker="o", markerfacecolor="white", color="0.3"),
        ]
        labels += ["interval excludes 0", "inconclusive (interval includes 0)"]
        if cut:
            handles.append(Line2D([], [], ls="", marker="^", color="0.3"))
            labels.append("band continues\nbeyond the axis")
        fig.legend(handles, labels, loc="outside right center", frameon=False)
        fig.suptitle(
            f"{title}, at equal sparsity\nband: 95% paired t-interval across seeds, simultaneous"
            " over the levels of each line (Bonferroni)",
            fontsize=12,
        )
    return fig


def _panels(
    frame: pd.DataFrame, seeds: pd.DataFrame, by: list[str]
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    by = [b for b in by if b in frame and frame[b].nunique(dropna=True) > 1]
    if not by:
        return [("", frame, seeds)]
    out = []
    for key, g in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        s = seeds
        for k, v in zip(by, key):
            if not s.empty:
                s = s[s[k].isna()] if pd.isna(v) else s[s[k] == v]
        out.append((" · ".join(f"{k}={v}" for k, v in zip(by, key)), g, s))
    return out


def _kinds(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of each figure, with the column that names its lines."""
    if frame.empty:
        return {}
    dense = frame[frame["kind"] == "dense"]
    if "control" in dense:
        dense = dense[dense["control"].fillna("none") == "none"]
    crit = frame[frame["kind"] == "criterion"]
    other = frame[frame["kind"] == "axis"]
    return {
        "control": frame[frame["kind"] == "control"],
        "dense": dense,
        "criterion": crit.assign(pair=crit["a"] + " - " + crit["b"]),
        "schedule": frame[frame["kind"] == "schedule"],
        "axis": other.assign(pair=other["comparison"].str.split(" \\(").str[0]),
    }


def comparison_figures(comparisons: pd.DataFrame, seeds: pd.DataFrame | None = None) -> dict:
    """The difference figures; `seeds` (Analysis.seeds) adds each seed's difference."""
    c = _kinds(comparisons)
    if not c:
        return {}
    s = _kinds(seeds if seeds is not None else pd.DataFrame())
    axes = [k for k in comparisons.columns if "." in k] + ["prune_rate"]
    spec = {  # figure: (kind, panel keys, line, title)
        "diff_ticket_vs_controls": ("control", ["criterion", "schedule", *axes], "b",
                                    "Ticket minus its control, paired by seed"),
        "diff_vs_dense": ("dense", ["schedule", *axes], "criterion",
                          "Level minus the dense net, same seed"),
        "diff_criteria": ("criterion", ["schedule", *axes], "pair",
                          "Criterion A minus criterion B, paired by seed"),
        "diff_iterative_vs_oneshot": ("schedule", axes, "criterion",
                                      "Iterative minus one-shot, paired by seed"),
        "diff_axes": ("axis", ["criterion"], "pair",
                      "One axis value minus another, paired by seed"),
    }  # fmt: skip
    figs = {}
    for name, (kind, by, line, title) in spec.items():
        fig = diff_figure(_panels(c[kind], s.get(kind, pd.DataFrame()), by), line, title)
        if fig is not None:
            figs[name] = fig
    return figs
