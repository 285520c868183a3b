"""Learning curves, as the study and Frankle & Carbin plot them: validation accuracy and loss over
training, for a few pruning levels of each arm.

Trials log one point per validation evaluation (`epoch_val_acc`, `epoch_val_loss`; step = evaluation
counted across the whole trial) and, per round, how many evaluations it made (`evaluations`; older
runs: `epochs`, one evaluation per epoch). That splits the trial's curve back into rounds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lth_ray.report.plots import STYLE
from lth_ray.report.stats import complete_rows, fmt_level, group_keys

CURVE_KEYS = ("epoch_val_acc", "epoch_val_loss", "epoch_train_loss")
ARM_ORDER = ("ticket", "one-shot", "reinit", "random_mask")
MAX_LEVELS = 4


def arm(row) -> str:
    if row["control"] != "none":
        return str(row["control"])
    return "one-shot" if row["schedule"] == "one_shot" else "ticket"


def curves_table(trials: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per complete trial x round x evaluation: val_acc (%), val_loss, train_loss."""
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
                        "round": int(r["round"]),
                        "weights_remaining": r["weights_remaining"],
                        "evaluation": i,
                        "val_acc_pct": 100.0 * p.get("epoch_val_acc", math.nan),
                        "val_loss": p.get("epoch_val_loss", math.nan),
                        "train_loss": p.get("epoch_train_loss", math.nan),
                    }
                )
            start += count
    return pd.DataFrame.from_records(out)


def pick_levels(rounds: pd.DataFrame, k: int = MAX_LEVELS) -> list[int]:
    """Round 0 and up to k-1 rounds spread evenly in log(weights remaining) down to the sparsest."""
    by_round = rounds.groupby("round")["weights_remaining"].mean().sort_index()
    if by_round.empty:
        return []
    if len(by_round) <= k:
        return list(by_round.index)
    targets = np.geomspace(by_round.iloc[0], by_round.iloc[-1], k)
    picked: list[int] = []
    for t in targets:
        r = int((np.log(by_round) - np.log(t)).abs().idxmin())
        if r not in picked:
            picked.append(r)
    return sorted(picked)


def learning_curves(table: pd.DataFrame, y: str = "val_acc_pct") -> Figure | None:
    """Rows: criteria; columns: arms; lines: a few levels (mean over seeds), x = evaluation."""
    if table.empty:
        return None
    criteria = sorted(table["criterion"].dropna().unique())
    arms = [a for a in ARM_ORDER if a in set(table["arm"])]
    levels = pick_levels(table[table["arm"] == "ticket"] if "ticket" in arms else table)
    table = table[table["round"].isin(levels)]
    cmap = sns.color_palette("viridis", as_cmap=True)
    colors = {r: cmap(x)[:3] for r, x in zip(levels, np.linspace(0.0, 0.85, len(levels)))}
    label = "Validation accuracy (%)" if y == "val_acc_pct" else "Validation loss"
    cells = [
        (c, a)
        for c in criteria
        for a in arms
        if ((table["criterion"] == c) & (table["arm"] == a)).any()
    ]
    ncols = min(len(cells), max(len(arms), 2))
    nrows = math.ceil(len(cells) / ncols)
    with rc_context(STYLE), sns.axes_style("whitegrid"):
        fig = Figure(figsize=(3.2 + 3.6 * ncols, 1.2 + 2.9 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
        for ax, (c, a) in zip(axes.flat, cells):
            sel = table[(table["criterion"] == c) & (table["arm"] == a)]
            for r in levels:
                g = sel[sel["round"] == r].groupby("evaluation")[y].mean()
                if g.empty:
                    continue
                wr = sel.loc[sel["round"] == r, "weights_remaining"].mean()
                ax.plot(
                    g.index, g.values, color=colors[r], lw=1.6, marker="o", ms=2.5,
                    label=f"{fmt_level(wr)}% weights", gid=f"level:{r}",
                )  # fmt: skip
            ax.set_title(f"{c} · {a}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in axes.flat[len(cells) :]:
            ax.set_visible(False)
        for ax in axes[-1, :]:
            ax.set_xlabel("validation evaluation within the round")
        for ax in axes[:, 0]:
            ax.set_ylabel(label)
        handles, names = [], []
        for ax in axes.flat:
            for h, n in zip(*ax.get_legend_handles_labels()):
                if n not in names:
                    handles.append(h)
                    names.append(n)
        fig.legend(handles, names, loc="outside right center", frameon=False)
        seeds = table["seed"].nunique()
        fig.suptitle(
            f"Learning curves: {label.lower()} during training, mean of {seeds} seed(s), "
            "a few pruning levels",
            fontsize=12,
        )
    return fig
