"""Writing the tables: trials (csv + parquet), levels.csv, summary.csv and a readable summary.md."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lth_ray.report.stats import CHANCE_MARGIN_PP, fmt_level, group_keys
from lth_ray.report.tidy import COMPLETE, axis_columns


def write_tables(
    trials: pd.DataFrame, levels: pd.DataFrame, summary: pd.DataFrame, out_dir: Path
) -> list[Path]:
    paths = [
        out_dir / "trials.csv",
        out_dir / "trials.parquet",
        out_dir / "levels.csv",
        out_dir / "summary.csv",
    ]
    trials.to_csv(paths[0], index=False)
    trials.to_parquet(paths[1], index=False)
    levels.to_csv(paths[2], index=False, float_format="%.6g")
    summary.to_csv(paths[3], index=False, float_format="%.6g")
    return paths


def _num(v, spec: str = ".1f", none: str = "–") -> str:
    return format(v, spec) if _finite(v) else none


def _ci(mean, low, high) -> str:
    if not _finite(mean):
        return "–"
    return f"{mean:.1f} [{low:.1f}, {high:.1f}]" if _finite(low) else f"{mean:.1f} (1 seed)"


def _finite(v) -> bool:
    return v is not None and not pd.isna(v) and math.isfinite(float(v))


def _at(wr, rnd) -> str:
    return f"{fmt_level(wr)}% (round {int(rnd)})" if _finite(wr) else "none"


def _group_name(row, axes: list[str]) -> str:
    extra = "".join(f" · {a} = {row[a]}" for a in axes)
    return (
        f"{row['criterion']} · rate {row['prune_rate'] * 100:g}%/round{extra} · "
        f"{row['schedule']} · control {row['control']}"
    )


def _margin(summary: pd.DataFrame) -> str:
    m = summary.get("matches_dense_margin_pp", pd.Series(dtype=float)).dropna()
    return f"{m.iloc[0]:g}" if len(m) else "–"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def summary_markdown(
    trials: pd.DataFrame,
    levels: pd.DataFrame,
    summary: pd.DataFrame,
    meta: dict,
    warnings: list[str],
    figures: list[str],
    verdict: list[str] | None = None,
) -> str:
    """summary.md: the verdict, the summary table, the per-level tables, what is incomplete."""
    per_trial = trials.drop_duplicates("trial")
    lines = _header(per_trial, summary, meta, verdict)
    lines += _summary_table(summary)
    lines += _level_tables(levels)
    lines += _incomplete(per_trial)
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f}.png)" for f in figures] + [""]
    return "\n".join(lines)


def _header(
    per_trial: pd.DataFrame, summary: pd.DataFrame, meta: dict, verdict: list[str] | None
) -> list[str]:
    n_inc = int((per_trial["status"] != COMPLETE).sum())
    return [
        f"# Lottery-ticket report: sweep `{meta['sweep']}`",
        "",
        f"Experiment `{meta['experiment']}` · {len(per_trial)} trials "
        f"({len(per_trial) - n_inc} complete, {n_inc} incomplete) · metrics read via {meta['reader']}.",
        "",
        *(
            [
                "## Verdict",
                "",
                *verdict,
                "Details: primary.csv (one primary test per comparison), comparisons.csv (one row"
                " per comparison and level), noninferiority.csv (each level against dense),"
                " comparisons_by_seed.csv (each seed's paired difference).",
                "",
            ]
            if verdict
            else []
        ),
        "Test accuracy of the early-stopped weights (minimum validation loss), in %. "
        "95% CI: t-interval across seeds, mean ± t(0.975, n−1)·s/√n, complete trials only. "
        "*Matches dense*: paired non-inferiority at equal sparsity, the rule the verdict uses: "
        "a level matches when the lower bound of the 95% paired interval of (level − dense, same "
        f"seed) is above −δ, δ = {_margin(summary)} pp; reported: the sparsest level of the "
        "unbroken run of matching levels from the first pruned one (one seed: no interval, no "
        "match). *Largest gain*: the level with the largest mean paired difference from dense, "
        "with its 95% interval (unadjusted, a selected level). "
        f"*Collapse*: first level whose mean is below chance + {CHANCE_MARGIN_PP:g} points.",
        "",
        "## Summary",
        "",
    ]


def _summary_table(summary: pd.DataFrame) -> list[str]:
    rows = []
    axes = axis_columns(summary)
    for _, s in summary.iterrows():
        gain = (
            f"{s['best_gain_pp']:+.1f} pp"
            + (
                f" [{s['best_gain_ci_low_pp']:+.1f}, {s['best_gain_ci_high_pp']:+.1f}]"
                if _finite(s.get("best_gain_ci_low_pp"))
                else ""
            )
            + f" at {fmt_level(s['best_gain_weights_remaining_pct'])}%"
            if _finite(s["best_gain_pp"])
            else "–"
        )
        rows.append(
            [
                str(s["criterion"]),
                f"{s['prune_rate'] * 100:g}%",
                *(str(s[a]) for a in axes),
                str(s["schedule"]),
                str(s["control"]),
                f"{s['n_seeds']}"
                + (f" (+{s['n_incomplete']} incomplete)" if s["n_incomplete"] else ""),
                _ci(s["dense_acc_mean_pct"], s["dense_acc_ci_low_pct"], s["dense_acc_ci_high_pct"]),
                _num(s["dense_acc_sd_pct"], ".2f"),
                _at(s["matches_dense_weights_remaining_pct"], s["matches_dense_round"]),
                gain,
                _at(s["chance_collapse_weights_remaining_pct"], s["chance_collapse_round"]),
                _num(s["early_stop_epoch_dense"])
                + " → "
                + _num(s["early_stop_epoch_min"])
                + (
                    f" at {fmt_level(s['early_stop_epoch_min_weights_remaining_pct'])}%"
                    if _finite(s["early_stop_epoch_min_weights_remaining_pct"])
                    else ""
                ),
            ]
        )
    return _table(
        [
            "criterion",
            "rate",
            *axes,
            "schedule",
            "control",
            "seeds",
            "dense acc % [95% CI]",
            "seed sd (pp)",
            f"matches dense (δ = {_margin(summary)} pp) down to (weights left)",
            "largest gain over dense [95% CI]",
            f"below chance+{CHANCE_MARGIN_PP:g} from",
            "early-stop epoch: dense → fastest",
        ],
        rows,
    )


def _level_tables(levels: pd.DataFrame) -> list[str]:
    lines = ["", "## Per level", ""]
    keys = group_keys(levels)
    for key, lv in levels.groupby(keys, sort=True, dropna=False):
        name = _group_name(dict(zip(keys, key)), axis_columns(levels))
        lines += [f"### {name}", ""]
        lines += _table(
            [
                "round",
                "weights left %",
                "sparsity %",
                "n",
                "test acc % [95% CI]",
                "early-stop epoch [95% CI]",
                "skipped",
            ],
            [
                [
                    str(r["round"]),
                    fmt_level(r["weights_remaining_pct"]),
                    _num(r["sparsity_pct"]),
                    str(r["n"]),
                    _ci(r["acc_mean_pct"], r["acc_ci_low_pct"], r["acc_ci_high_pct"]),
                    _ci(r["best_epoch_mean"], r["best_epoch_ci_low"], r["best_epoch_ci_high"]),
                    f"{r['skipped_frac']:.0%}" if _finite(r["skipped_frac"]) else "–",
                ]
                for _, r in lv.sort_values("round").iterrows()
            ],
        )
        lines.append("")
    return lines


def _incomplete(per_trial: pd.DataFrame) -> list[str]:
    inc = per_trial[per_trial["status"] != COMPLETE]
    lines = ["## Incomplete trials (listed, marked × in plots, not in the statistics)", ""]
    if inc.empty:
        lines += ["None.", ""]
    else:
        lines += _table(
            ["trial", "MLflow status", "rounds logged / expected", "run id"],
            [
                [
                    str(r["trial"]),
                    str(r["run_status"]),
                    f"{r['rounds_done']} / {_num(r['rounds_total'], 'd', '?')}",
                    f"`{r['run_id']}`",
                ]
                for _, r in inc.iterrows()
            ],
        )
        lines.append("")
    return lines
