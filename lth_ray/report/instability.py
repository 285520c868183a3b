"""The instability analysis in the report: the sweep's noise-pair runs as a table, figures and a
verdict line.

- instability (error, percentage points) vs k, one line per level with its 95% t-band across seeds
  (pairs of one seed are averaged first), on the test set and the training subset;
- instability vs weights remaining, one line per k;
- the test error along the path for each k (one line per level, mean over seeds);
- the verdict: a (k, level) is stable when the upper bound of its 95% interval is below the
  threshold, unstable when the lower bound is above it, otherwise inconclusive; "stable from k" is
  the earliest analysed k from which every later analysed k is stable too. The intervals are per
  (k, level), unadjusted, and the status uses the same interval. "Stable from k" asserts that every
  analysed k from there on is stable: an intersection-union claim, wrong only if the latest truly
  unstable k among them is called stable, so its error rate is that of one interval (2.5%, one
  side) and needs no adjustment for the number of k. Each level is a claim of its own, not
  adjusted for the number of levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from lth_ray import schema
from lth_ray.lottery.schedule import parse_steps
from lth_ray.report.stats import t_interval

SPLITS = ("test", "train")


@dataclass
class InstabilityReport:
    pairs: pd.DataFrame  # one row per pair run
    table: pd.DataFrame  # one row per (level, k, split)
    paths: pd.DataFrame  # (level, k, seed, pair, alpha index, error)
    lines: list[str]
    figures: dict[str, Figure] = field(default_factory=dict)


def _k_order(k: str) -> tuple[int, int]:
    n, unit = parse_steps(k)
    return (0 if unit == "it" else 1, n)


def pair_frame(
    client, experiment_id: str, sweep_ids: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pair runs of these sweeps (summaries, and the error along each path)."""
    rows, paths = [], []
    for sweep in sweep_ids:
        query = (
            f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_INSTABILITY}'"
            f" and tags.`{schema.TAG_SWEEP}` = '{sweep}'"
        )
        for run in client.search_runs([experiment_id], query, max_results=50_000):
            if run.info.status != "FINISHED":
                continue
            t, m = run.data.tags, run.data.metrics
            row = {
                "sweep": sweep,
                "seed": int(t[schema.TAG_SEED]),
                "k": t[schema.TAG_LMC_K],
                "level": int(t[schema.TAG_LMC_LEVEL]),
                "pair": int(t[schema.TAG_LMC_PAIR]),
                "batchnorm": t.get(schema.TAG_LMC_BATCHNORM, ""),
                "threshold": float(run.data.params.get("analysis.threshold", "nan")),
                **m,
            }
            rows.append(row)
            for split in SPLITS:
                name = schema.LMC_PATH.format(split=split)
                for point in client.get_metric_history(run.info.run_id, name):
                    paths.append(
                        {
                            **{c: row[c] for c in ("seed", "k", "level", "pair")},
                            "split": split,
                            "alpha_index": int(point.step),
                            "error": point.value,
                        }  # fmt: skip
                    )
    return pd.DataFrame(rows), pd.DataFrame(paths)


def instability_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per (level, k, split): the mean instability in points with its 95% t-interval across seeds."""
    out = []
    for (level, k), group in pairs.groupby(["level", "k"]):
        seeds = group.groupby("seed").mean(numeric_only=True)
        for split in SPLITS:
            column = f"instability_{split}"
            if column not in seeds:
                continue
            ci = t_interval(100 * seeds[column])
            out.append(
                {
                    "level": level,
                    "k": k,
                    "split": split,
                    "weights_remaining_pct": float(seeds["weights_remaining"].mean()),
                    "instability_pp": ci.mean,
                    "ci_low_pp": ci.low,
                    "ci_high_pp": ci.high,
                    "seeds": ci.n,
                    "threshold_pp": 100 * float(group["threshold"].iloc[0]),
                }
            )
    table = pd.DataFrame(out)
    if table.empty:
        return table
    table["k_order"] = table["k"].map(_k_order)
    table["status"] = [_status(r) for r in table.itertuples()]
    return table.sort_values(["split", "level", "k_order"]).drop(columns="k_order")


def _status(r) -> str:
    if r.seeds < 2 or math.isnan(r.ci_high_pp):
        return "no interval (one seed)"
    if r.ci_high_pp < r.threshold_pp:
        return "stable"
    if r.ci_low_pp > r.threshold_pp:
        return "unstable"
    return "inconclusive"


def verdict_lines(table: pd.DataFrame, split: str = "test") -> list[str]:
    """One line per level: the earliest k from which every analysed k is stable, with its interval."""
    lines = []
    rows = table[table["split"] == split]
    for level, group in rows.groupby("level"):
        group = group.sort_values("k", key=lambda s: s.map(_k_order))
        where = "dense" if level == 0 else f"level {level}"
        remaining = f"{group['weights_remaining_pct'].iloc[0]:.1f}% of weights"
        stable = list(group["status"] == "stable")
        start = next((i for i in range(len(stable)) if all(stable[i:])), None)
        if start is None:
            worst = group.iloc[-1]
            lines.append(
                f"{where} ({remaining}): not shown stable at any analysed k; at the latest,"
                f" k = {worst['k']}: {_ci(worst)} ({worst['status']})"
            )
            continue
        r = group.iloc[start]
        lines.append(
            f"stable from k = {r['k']} at {where} ({remaining}): instability {_ci(r)}"
            f" < {r['threshold_pp']:.1f} points, {int(r['seeds'])} seeds ({split} error)"
        )
    return lines


def _ci(r) -> str:
    if math.isnan(r["ci_low_pp"]):
        return f"{r['instability_pp']:.2f} points (no interval)"
    return f"{r['instability_pp']:.2f} [{r['ci_low_pp']:.2f}, {r['ci_high_pp']:.2f}] points"


def figures(table: pd.DataFrame, paths: pd.DataFrame) -> dict[str, Figure]:
    figs: dict[str, Figure] = {}
    for split in SPLITS:
        rows = table[table["split"] == split]
        if rows.empty:
            continue
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ks = sorted(rows["k"].unique(), key=_k_order)
        x = {k: i for i, k in enumerate(ks)}
        for level, g in rows.groupby("level"):
            g = g.sort_values("k", key=lambda s: s.map(_k_order))
            xs = [x[k] for k in g["k"]]
            label = (
                "dense"
                if level == 0
                else f"level {level} ({g['weights_remaining_pct'].iloc[0]:.1f}%)"
            )
            ax.plot(xs, g["instability_pp"], marker="o", label=label)
            ax.fill_between(xs, g["ci_low_pp"], g["ci_high_pp"], alpha=0.2)
        ax.axhline(rows["threshold_pp"].iloc[0], color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(ks)), ks)
        ax.set_xlabel("rewind point k")
        ax.set_ylabel(f"instability ({split} error, points)")
        ax.legend(fontsize=8)
        figs[f"instability_vs_k_{split}"] = fig

        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for k, g in rows.groupby("k"):
            g = g.sort_values("weights_remaining_pct", ascending=False)
            ax.plot(g["weights_remaining_pct"], g["instability_pp"], marker="o", label=f"k = {k}")
            ax.fill_between(g["weights_remaining_pct"], g["ci_low_pp"], g["ci_high_pp"], alpha=0.2)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel(f"instability ({split} error, points)")
        ax.legend(fontsize=8)
        figs[f"instability_vs_weights_{split}"] = fig
    if not paths.empty:
        test = paths[paths["split"] == "test"]
        ks = sorted(test["k"].unique(), key=_k_order)
        fig = Figure(figsize=(3.2 * len(ks), 3.2))
        axes = fig.subplots(1, len(ks), squeeze=False)[0]
        for ax, k in zip(axes, ks):
            for level, g in test[test["k"] == k].groupby("level"):
                mean = g.groupby("alpha_index")["error"].mean() * 100
                n = max(int(mean.index.max()), 1)
                ax.plot(
                    mean.index / n, mean.values, label="dense" if level == 0 else f"level {level}"
                )
            ax.set_title(f"k = {k}")
            ax.set_xlabel("alpha")
        axes[0].set_ylabel("test error (%)")
        axes[0].legend(fontsize=8)
        figs["instability_error_path"] = fig
    return figs


def instability_report(
    client, experiment_id: str, sweep_ids: list[str]
) -> InstabilityReport | None:
    """None when the sweeps have no finished pair runs."""
    pairs, paths = pair_frame(client, experiment_id, sweep_ids)
    if pairs.empty:
        return None
    table = instability_table(pairs)
    bn = sorted(set(pairs["batchnorm"]))
    lines = verdict_lines(table) + [f"BatchNorm statistics along the path: {', '.join(bn)}"]
    return InstabilityReport(pairs, table, paths, lines, figures(table, paths))


def write(report: InstabilityReport, out: Path) -> tuple[list[Path], str]:
    """The tables as CSV, and the summary's section as markdown."""
    files = []
    for name, frame in (("instability", report.table), ("instability_pairs", report.pairs)):
        frame.to_csv(out / f"{name}.csv", index=False, float_format="%.6g")
        files.append(out / f"{name}.csv")
    test = report.table[report.table["split"] == "test"]
    header = "| level | weights remaining | k | instability (points) | 95% CI | seeds | status |"
    rows = [header, "|---|---|---|---|---|---|---|"]
    for r in test.itertuples():
        rows.append(
            f"| {r.level} | {r.weights_remaining_pct:.1f}% | {r.k} | {r.instability_pp:.2f} |"
            f" [{r.ci_low_pp:.2f}, {r.ci_high_pp:.2f}] | {r.seeds} | {r.status} |"
        )
    text = "\n".join(
        [
            "## Instability analysis (linear mode connectivity)",
            "",
            "Instability = max over the path of the test error minus the mean of the two ends, in"
            " percentage points; 95% t-intervals across seeds per (k, level), unadjusted. A (k,"
            " level) is stable when its interval lies below the threshold, unstable when above it,"
            ' else inconclusive. "Stable from k" says every analysed k from there on is stable:'
            " it is wrong only if the latest truly unstable one is called stable, so its error"
            " rate is that of one interval and no adjustment for the number of k is needed; each"
            " level is a claim of its own.",
            "",
            *[f"- {line}" for line in report.lines],
            "",
            *rows,
            "",
        ]
    )
    return files, text
