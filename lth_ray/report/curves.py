"""Learning curves, as the study and Frankle & Carbin plot them: validation accuracy and loss over
training, for a few pruning levels of each arm.

Trials log one point per validation evaluation (`epoch_val_acc`, `epoch_val_loss`, and
`epoch_iteration`, the optimizer steps of the round at that evaluation; step = evaluation counted
across the whole trial) and, per round, how many evaluations it made (`evaluations`; older runs:
`epochs`, one evaluation per epoch). That splits the trial's curve back into rounds. The x axis is
iterations within the round, as Frankle & Carbin plot it; runs that did not log `epoch_iteration`
fall back to the evaluation's index, and the axis says so.

Levels are chosen by weights remaining, not by round: a criterion that skips rounds reaches a level
later, so "round 5" of two seeds can be two sparsities. Each trial contributes its first round at a
chosen level (thin line), the mean over those trials is the thick line.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from lth_ray.report.plots import MARKERS, STYLE, distinct_colors
from lth_ray.report.stats import complete_rows, fmt_level, group_keys
from lth_ray.report.tidy import axis_columns

CURVE_KEYS = ("epoch_val_acc", "epoch_val_loss", "epoch_train_loss", "epoch_iteration")
ARM_ORDER = ("ticket", "one-shot", "reinit", "random_mask")
MAX_LEVELS = 4
LEVEL_TOL = 0.01  # a round is at a chosen level when its weights remaining is within 1% of it


def arm(row) -> str:
    if row["control"] != "none":
        return str(row["control"])
    return "one-shot" if row["schedule"] == "one_shot" else "ticket"


def curves_table(trials: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per complete trial x round x evaluation: val_acc (%), val_loss, train_loss and the
    iteration of the round the evaluation ran at (NaN when not logged)."""
    rows = complete_rows(trials)
    if rows.empty or metrics.empty:
        return pd.DataFrame()
    per_round = (
        "evaluations" if "evaluations" in rows and rows["evaluations"].notna().any() else "epochs"
    )
    if per_round not in rows or rows[per_round].isna().all():
        return pd.DataFrame()
    wide = (
        metrics[metrics["key"].isin(CURVE_KEYS)]
        .pivot_table(index=["run_id", "step"], columns="key", values="value", aggfunc="last")
        .reset_index()
    )
    out = []
    keys = group_keys(trials)
    for run_id, g in rows.sort_values("round").groupby("run_id", sort=False):
        points = wide[wide["run_id"] == run_id].set_index("step")
        start = 0
        for _, r in g.iterrows():
            count = int(r[per_round]) if np.isfinite(r[per_round]) else 0
            for i in range(1, count + 1):
                step = start + i
                if step not in points.index:
                    continue
                p = points.loc[step]
                out.append(
                    {
                        **{k: r[k] for k in keys},
                        "arm": arm(r),
                        "seed": r["seed"],
                        "run_id": run_id,
                        "round": int(r["round"]),
                        "weights_remaining": r["weights_remaining"],
                        "evaluation": i,
                        "iteration": p.get("epoch_iteration", math.nan),
                        "val_acc_pct": 100.0 * p.get("epoch_val_acc", math.nan),
                        "val_loss": p.get("epoch_val_loss", math.nan),
                        "train_loss": p.get("epoch_train_loss", math.nan),
                    }
                )
            start += count
    return pd.DataFrame.from_records(out)


def pick_weights(weights, k: int = MAX_LEVELS) -> list[float]:
    """The densest level and up to k-1 more spread evenly in log(weights remaining) down to the
    sparsest, chosen among the levels that occur (descending)."""
    levels = sorted({float(w) for w in weights if np.isfinite(w) and w > 0}, reverse=True)
    if len(levels) <= k:
        return levels
    logs = np.log(levels)
    picked: list[float] = []
    for t in np.linspace(logs[0], logs[-1], k):
        w = levels[int(np.abs(logs - t).argmin())]
        if w not in picked:
            picked.append(w)
    return sorted(picked, reverse=True)


def level_palette(levels: list[float]) -> dict[float, tuple]:
    """One colour per level, far apart (dense near-black, then plots.distinct_colors): neighbouring
    levels of a sequential map are too alike to tell apart."""
    colors = [(0.15, 0.15, 0.15), *distinct_colors()]
    return {w: colors[i % len(colors)] for i, w in enumerate(levels)}


def at_levels(table: pd.DataFrame, levels: list[float]) -> pd.DataFrame:
    """Each trial's first round at each chosen level, tagged with that level (`level`)."""
    parts = []
    for w in levels:
        near = (table["weights_remaining"] - w).abs() <= LEVEL_TOL * w
        sel = table[near]
        first = sel.groupby("run_id")["round"].transform("min")
        parts.append(sel[sel["round"] == first].assign(level=w))
    return pd.concat(parts, ignore_index=True) if parts else table.iloc[:0].assign(level=[])


def _setting(key: str, value) -> str:
    return f"{value * 100:g}%/round" if key == "prune_rate" else f"{key}={value}"


def learning_curves(table: pd.DataFrame, y: str = "val_acc_pct") -> Figure | None:
    """Panels: criterion x arm (x each setting of the other varying axes: prune rate, rewind, ...,
    whose levels differ); per chosen level one thin line per trial and their mean; x = iterations
    within the round."""
    if table.empty:
        return None
    criteria = sorted(table["criterion"].dropna().unique())
    arms = [a for a in ARM_ORDER if a in set(table["arm"])]
    varying = [k for k in ("prune_rate", *axis_columns(table)) if table[k].nunique() > 1]
    settings: list[tuple] = [()]
    if varying:
        settings = sorted(table[varying].drop_duplicates().itertuples(index=False, name=None))

    def where(frame: pd.DataFrame, st: tuple) -> pd.DataFrame:
        return frame[(frame[varying] == list(st)).all(axis=1)] if varying else frame

    parts = []
    for st in settings:  # levels per setting: prune rates reach different levels
        sub = where(table, st)
        ref = sub[sub["arm"] == "ticket"] if "ticket" in arms else sub
        parts.append(at_levels(sub, pick_weights(ref["weights_remaining"])))
    table = pd.concat(parts, ignore_index=True)
    levels = sorted(set(table["level"]), reverse=True)
    colors = level_palette(levels)
    iterations = "iteration" in table and table["iteration"].notna().all()
    x = "iteration" if iterations else "evaluation"
    label = "Validation accuracy (%)" if y == "val_acc_pct" else "Validation loss"
    cells = [
        (c, a, st)
        for st in settings
        for c in criteria
        for a in arms
        if ((where(table, st)["criterion"] == c) & (where(table, st)["arm"] == a)).any()
    ]
    if not cells:
        return None
    ncols = min(len(cells), max(len(arms), 2))
    nrows = math.ceil(len(cells) / ncols)
    with rc_context(STYLE), sns.axes_style("whitegrid"):
        fig = Figure(figsize=(3.2 + 3.6 * ncols, 1.2 + 2.9 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        for ax, (c, a, st) in zip(axes.flat, cells):
            sel = where(table, st)
            sel = sel[(sel["criterion"] == c) & (sel["arm"] == a)]
            for k, w in enumerate(levels):
                at = sel[sel["level"] == w]
                if at.empty:
                    continue
                for run_id, g in at.groupby("run_id", sort=True):
                    g = g.sort_values("evaluation")
                    ax.plot(g[x], g[y], color=colors[w], lw=0.7, alpha=0.45, zorder=1,
                            label=f"_trial:{w:g}:{run_id}")  # fmt: skip
                mean = at.groupby("evaluation")[[x, y]].mean().sort_index()
                ax.plot(
                    mean[x], mean[y], color=colors[w], lw=1.8, marker=MARKERS[k % len(MARKERS)],
                    ms=3.5, label=f"{fmt_level(w)}% weights", gid=f"level:{w:g}", zorder=2,
                )  # fmt: skip
            ax.set_title(" · ".join([c, a, *(_setting(k, v) for k, v in zip(varying, st))]))
            if not iterations:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in axes.flat[len(cells) :]:
            ax.set_visible(False)
        xlabel = (
            "iterations within the round"
            if iterations
            else "validation evaluation within the round\n(iterations not logged by these runs)"
        )
        for ax in axes[-1, :]:
            ax.set_xlabel(xlabel)
        for ax in axes[:, 0]:
            ax.set_ylabel(label)
        handles, names = [], []
        for ax in axes.flat:
            for h, n in zip(*ax.get_legend_handles_labels()):
                if n not in names:
                    handles.append(h)
                    names.append(n)
        handles.append(Line2D([], [], color="0.3", lw=0.7, alpha=0.6))
        names.append("one trial (thin)")
        fig.legend(handles, names, loc="outside right center", frameon=False)
        seeds = table["seed"].nunique()
        fig.suptitle(
            f"Learning curves: {label.lower()} during training at a few levels of weights "
            f"remaining\nthin: each trial's first round at the level ({seeds} seed(s)); thick: "
            "mean of the trials that reached it",
            fontsize=12,
        )
    return fig
