"""The verdict: short answers to the study's questions, generated from the paired comparisons.

Each sentence states only what the intervals show: a level counts as better or worse when its paired
difference is significant after Holm's correction across the levels of that comparison (p < 0.05);
everything else is "no significant difference", and a comparison with fewer than two paired seeds
says "not enough seeds to tell". Numbers are percentage points of test accuracy, with the 95% paired
t-interval in brackets and weights remaining as the level.
"""

from __future__ import annotations

import pandas as pd

from lth_ray.report.compare import ALPHA
from lth_ray.report.stats import fmt_level


def _ci(row) -> str:
    return f"{row['mean_diff_pp']:+.1f} pp [{row['ci_low_pp']:+.1f}, {row['ci_high_pp']:+.1f}]"


def _levels(rows: pd.DataFrame, total: int) -> str:
    wr = [fmt_level(w) for w in rows.sort_values("round")["weights_remaining_pct"]]
    where = f"{wr[0]}%" if len(wr) == 1 else f"{wr[0]}% to {wr[-1]}%"
    return f"at {len(wr)} of {total} levels ({where})"


def _p(v: float) -> str:
    return "< 0.001" if v < 0.001 else f"= {v:.3f}"


def _misaligned(series: pd.DataFrame) -> str:
    if "weights_remaining_spread_pct" not in series:
        return ""
    spread = series["weights_remaining_spread_pct"].max()
    if not spread > 1.0:
        return ""
    return (
        f" [caution: paired trials differ by up to {spread:.1f} points of weights remaining at a"
        " level, because rounds were skipped; levels are rounds, not equal sparsities]"
    )


def describe(series: pd.DataFrame, better: str, worse: str) -> str:
    """'better at 9 of 14 levels (51% to 4.5%; largest +12.3 pp [8.1, 16.5] at 4.5%), worse at none'."""
    n = int(series["n"].max()) if len(series) else 0
    if n < 2:
        return f"not enough seeds to tell ({n} paired seed{'s' if n != 1 else ''})"
    sig = series[series["p_holm"] < ALPHA]
    up, down = sig[sig["mean_diff_pp"] > 0], sig[sig["mean_diff_pp"] < 0]
    total = len(series)
    parts = []
    for rows, word, pick in ((up, better, "idxmax"), (down, worse, "idxmin")):
        if rows.empty:
            continue
        top = rows.loc[getattr(rows["mean_diff_pp"], pick)()]
        parts.append(
            f"{word} {_levels(rows, total)}, largest {_ci(top)} at "
            f"{fmt_level(top['weights_remaining_pct'])}% (Holm p {_p(top['p_holm'])})"
        )
    if not parts:
        return (
            f"no level with a significant difference ({n} seeds, {total} levels; Holm-corrected"
            " p >= 0.05 everywhere)" + _misaligned(series)
        )
    rest = total - len(up) - len(down)
    tail = f"; no significant difference at the other {rest}" if rest else ""
    return "; ".join(parts) + f" ({n} seeds){tail}" + _misaligned(series)


def _group_suffix(series: pd.DataFrame, drop: set[str]) -> str:
    group = str(series["group"].iloc[0]) if len(series) else ""
    kept = [g for g in group.split(", ") if g and g.split("=")[0] not in drop]
    return f" ({', '.join(kept)})" if kept else ""


def breakdown(series: pd.DataFrame, chance_pct: float | None = None) -> str:
    """Where a ticket stops matching dense: the first level significantly below round 0."""
    n = int(series["n"].max()) if len(series) else 0
    if n < 2:
        return f"not enough seeds to tell ({n} paired seed{'s' if n != 1 else ''})"
    s = series.sort_values("round")
    below = s[(s["p_holm"] < ALPHA) & (s["mean_diff_pp"] < 0)]
    above = s[(s["p_holm"] < ALPHA) & (s["mean_diff_pp"] > 0)]
    if below.empty:
        text = (
            f"never significantly below dense down to {fmt_level(s['weights_remaining_pct'].iloc[-1])}%"
            f" of weights ({n} seeds)"
        )
    else:
        first = below.iloc[0]
        before = s[s["round"] < first["round"]]
        where = f"{fmt_level(first['weights_remaining_pct'])}%"
        detail = f"(paired difference {_ci(first)}, Holm p {_p(first['p_holm'])}; {n} seeds)"
        if len(before):
            last = fmt_level(before["weights_remaining_pct"].iloc[-1])
            text = (
                f"is not significantly below dense down to {last}% of weights and falls below it"
                f" from {where} on {detail}"
            )
        else:
            text = f"falls below dense already at the first pruned level, {where} {detail}"
    text += _misaligned(s)
    if not above.empty:
        top = above.loc[above["mean_diff_pp"].idxmax()]
        text += (
            f"; it beats dense at {len(above)} level{'s' if len(above) > 1 else ''} (largest"
            f" {_ci(top)} at {fmt_level(top['weights_remaining_pct'])}%)"
        )
    return text


def verdict(comparisons: pd.DataFrame) -> list[str]:
    """Markdown lines: one short paragraph per question the sweep can answer."""
    c = comparisons
    lines: list[str] = []
    if c.empty:
        return ["Not enough complete trials for any paired comparison yet."]

    def section(title: str, sentences: list[str]) -> None:
        if sentences:
            lines.extend([f"**{title}**", "", *[f"- {s}" for s in sentences], ""])

    iterative = c["schedule"] == "iterative" if "schedule" in c else pd.Series(True, index=c.index)
    controls = c[c["kind"] == "control"]
    sentences = []
    for (_, b), s in controls.groupby(["comparison", "b"], sort=True):
        who = s["criterion"].iloc[0] if "criterion" in s else "the"
        sentences.append(
            f"{who} tickets vs their {b} controls{_group_suffix(s, {'criterion'})}: "
            + describe(s, "better", "worse")
            + "."
        )
    section("Does the ticket beat its random controls?", sentences)

    crit = c[c["kind"] == "criterion"]
    sentences = []
    for _, s in crit.groupby("comparison", sort=True):
        a, b = s["a"].iloc[0], s["b"].iloc[0]
        if not ({a, b} & {"magnitude", "random"}):
            continue
        sentences.append(
            f"{a} vs {b}{_group_suffix(s, set())}: "
            + describe(s, f"{a} is better", f"{a} is worse")
            + "."
        )
    section("How do the criteria compare (paired by seed, tickets of one schedule)?", sentences)

    sched = c[c["kind"] == "schedule"]
    sentences = [
        f"{s['criterion'].iloc[0]}{_group_suffix(s, {'criterion'})}: "
        + describe(s, "iterative is better than one-shot", "iterative is worse than one-shot")
        + "."
        for _, s in sched.groupby("comparison", sort=True)
    ]
    section("Does iterative pruning beat one-shot?", sentences)

    axes = c[c["kind"] == "axis"]
    sentences = [
        f"{s['comparison'].iloc[0]}: "
        + describe(s, f"{s['a'].iloc[0]} is better", f"{s['a'].iloc[0]} is worse")
        + "."
        for _, s in axes.groupby("comparison", sort=True)
    ]
    section("Do the other axes matter?", sentences)

    dense = c[(c["kind"] == "dense") & iterative.reindex(c.index, fill_value=True)]
    if "control" in dense:
        dense = dense[dense["control"].fillna("none") == "none"]
    sentences = []
    for _, s in dense.groupby("comparison", sort=True):
        who = s["criterion"].iloc[0] if "criterion" in s else "the ticket"
        sched_name = s["schedule"].iloc[0] if "schedule" in s else ""
        label = f"{who} ({sched_name})" if sched_name and sched_name != "iterative" else who
        sentences.append(
            f"{label}{_group_suffix(s, {'criterion', 'schedule', 'control'})}: "
            + breakdown(s)
            + "."
        )
    section("At what sparsity does the ticket break down?", sentences)
    return lines or ["No comparison applies to this sweep (one arm, one criterion)."]
