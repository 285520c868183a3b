"""The verdict: short answers to the study's questions, generated from the paired comparisons.

Every claim is a difference with its interval (test accuracy, percentage points, weights remaining as
the level). Each comparison leads with its pre-specified primary test (the mean paired difference over
a stated range of sparsity, interval simultaneous over the question's comparisons); per-level
differences follow as secondary results, with intervals simultaneous over the comparison's levels.
A call is made exactly when the interval beside it excludes 0; otherwise the result is
"inconclusive (the interval includes 0)", never "no effect", with the smallest difference those
seeds could have detected. Matching dense is paired non-inferiority with the report's margin.
"""

from __future__ import annotations

import pandas as pd

from lth_ray.report.compare import ALPHA, POWER, Analysis
from lth_ray.report.stats import fmt_level

FEW_SEEDS = 5


def _pp(v: float) -> str:
    return f"{v:+.1f}"


def _ci(row, adj: bool = True) -> str:
    lo, hi = ("ci_adj_low_pp", "ci_adj_high_pp") if adj else ("ci_low_pp", "ci_high_pp")
    return f"{_pp(row['mean_diff_pp'])} pp [{_pp(row[lo])}, {_pp(row[hi])}]"


def _p(v: float) -> str:
    return "< 0.001" if v < 0.001 else f"= {v:.3f}"


def level_list(weights: pd.Series) -> str:
    """'21.1%, 16.9%, 8.7%': every level named, sparsest last (no ranges that hide gaps)."""
    return ", ".join(f"{fmt_level(w)}%" for w in sorted(weights, reverse=True))


def _at(rows: pd.DataFrame, total: int) -> str:
    return f"at {len(rows)} of {total} levels ({level_list(rows['weights_remaining_pct'])})"


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def primary_sentence(p: pd.Series, better: str, worse: str, margin_pp: float) -> str:
    """The primary test of one comparison, with its range, family and detectable difference."""
    n = int(p["n"])
    if n < 2:
        return f"not enough seeds to tell ({n} paired {'seed' if n == 1 else 'seeds'})"
    where = (
        f"averaged over {fmt_level(p['range_high_pct'])}% to {fmt_level(p['range_low_pct'])}% of"
        f" weights ({p['levels']} levels"
        + ("; the range every seed of both arms reached" if p["range_narrowed"] else "")
        + ")"
    )
    family = f"{_seeds(n)}; Bonferroni over {p['m']} comparisons, p_adj {_p(p['p_adj'])}"
    if p["call"] == "better":
        head = f"{better}, {_ci(p)} {where}"
    elif p["call"] == "worse":
        head = f"{worse}, {_ci(p)} {where}"
    else:
        head = f"inconclusive (the interval includes 0): {_ci(p)} {where}"
        if p["ci_adj_low_pp"] > -margin_pp and p["ci_adj_high_pp"] < margin_pp:
            head += f", which excludes differences beyond ±{margin_pp:g} pp"
    return (
        f"{head} ({family}); the smallest difference these seeds could detect is"
        f" {p['mdd_pp']:.1f} pp"
    )


def levels_sentence(series: pd.DataFrame, better: str, worse: str) -> str:
    """Secondary: the levels whose simultaneous interval excludes 0, each named."""
    tested = series[series["n"] >= 2]
    if tested.empty:
        return ""
    total = len(tested)
    parts = []
    for call, word, pick in (("better", better, "idxmax"), ("worse", worse, "idxmin")):
        rows = tested[tested["call"] == call]
        if rows.empty:
            continue
        top = rows.loc[getattr(rows["mean_diff_pp"], pick)()]
        parts.append(
            f"{word} {_at(rows, total)}, largest {_ci(top)} at"
            f" {fmt_level(top['weights_remaining_pct'])}%"
        )
    rest = tested[tested["call"] == "inconclusive"]
    if len(rest):
        parts.append(
            f"inconclusive at {'the other ' if parts else ''}{len(rest)}"
            + ("" if parts else f" of {total}")
            + " (the interval includes 0)"
        )
    m = int(tested["m"].iloc[0])
    return f"per level (Bonferroni over {m} levels): " + "; ".join(parts)


def describe(primary: pd.DataFrame, series: pd.DataFrame, better, worse, margin_pp) -> str:
    n = int(series["n"].max()) if len(series) else 0
    if n < 2 or primary.empty:
        return f"not enough seeds to tell ({n} paired {'seed' if n == 1 else 'seeds'})"
    text = primary_sentence(primary.iloc[0], better, worse, margin_pp)
    per_level = levels_sentence(series, better, worse)
    return text + (f". Secondary, {per_level}" if per_level else "")


def breakdown(ni: pd.DataFrame, series: pd.DataFrame, margin_pp: float) -> str:
    """Where a ticket stops matching dense: paired non-inferiority tested in a fixed sequence."""
    s = ni.sort_values("round")
    n = int(s["n"].max()) if len(s) else 0
    if n < 2:
        return f"not enough seeds to tell ({n} paired {'seed' if n == 1 else 'seeds'})"
    rule = f"lower bound of the 95% paired interval of (level − dense) above −{margin_pp:g} pp"
    run = s[s["matches"]]
    fail = s[~s["matches"]]
    if fail.empty:
        text = (
            f"matches dense down to {fmt_level(s['weights_remaining_pct'].iloc[-1])}% of weights,"
            f" the sparsest level ({rule}, at each of {len(run)} levels; {_seeds(n)})"
        )
    else:
        first = fail.iloc[0]
        at = f"{fmt_level(first['weights_remaining_pct'])}%"
        detail = f"{_ci(first, adj=False)}, {_seeds(int(first['n']))}"
        if run.empty:
            text = f"not shown to match dense at the first pruned level, {at} ({detail}; {rule})"
        else:
            last = fmt_level(run["weights_remaining_pct"].iloc[-1])
            text = (
                f"matches dense down to {last}% of weights ({rule} at each level from the first"
                f" pruned one; {_seeds(n)}); not shown at {at} ({detail})"
            )
        alone = s[s["noninferior"] & ~s["matches"]]
        if len(alone):
            text += (
                f"; the lower bound clears −{margin_pp:g} pp again at {len(alone)} of"
                f" {len(fail) - 1} sparser levels ({level_list(alone['weights_remaining_pct'])}),"
                " which is not claimed: the fixed sequence stops at its first failure"
            )
    tested = series[series["n"] >= 2].sort_values("round")
    below, above = tested[tested["call"] == "worse"], tested[tested["call"] == "better"]
    m = int(tested["m"].iloc[0]) if len(tested) else 0
    if len(below):
        first = below.iloc[0]
        tail = tested[tested["round"] >= first["round"]]
        where = fmt_level(first["weights_remaining_pct"])
        how = f"{_ci(first)}, Bonferroni over {m} levels"
        text += (
            f"; falls below it from {where}% on ({how})"
            if (tail["call"] == "worse").all()
            else f"; below it {_at(below, len(tested))} (first at {where}%: {how})"
        )
    if len(above):
        top = above.loc[above["mean_diff_pp"].idxmax()]
        text += (
            f"; above it {_at(above, len(tested))}, largest {_ci(top)} at"
            f" {fmt_level(top['weights_remaining_pct'])}% (Bonferroni over {m} levels)"
        )
    return text


def _group_suffix(series: pd.DataFrame, drop: set[str]) -> str:
    group = str(series["group"].iloc[0]) if len(series) else ""
    kept = [g for g in group.split(", ") if g and g.split("=")[0] not in drop]
    return f" ({', '.join(kept)})" if kept else ""


def method(a: Analysis) -> list[str]:
    """What the numbers below are, in one paragraph (and a warning with few seeds)."""
    rng = (
        f"{fmt_level(max(a.primary_range))}% to {fmt_level(min(a.primary_range))}% of weights"
        if a.primary_range
        else "every pruned level of the schedule"
    )
    lines = [
        "Paired by seed at equal sparsity: each trial's accuracy is interpolated onto the"
        " schedule's levels (linear in log weights remaining, never extrapolated; a level an arm"
        " did not reach is left out). Primary test, one per comparison: the mean paired difference"
        f" over {rng} (the area between the curves on log sparsity, divided by its width), with"
        " an interval simultaneous over the comparisons of its question (Bonferroni); a"
        " comparison is called only when that interval excludes 0. Per-level differences are"
        " secondary, Bonferroni over the levels of one comparison; levels identical by"
        " construction (the shared dense net; the first pruned level of iterative vs one-shot)"
        " are not tested. Smallest detectable difference: at the same correction, with"
        f" {POWER:.0%} power, given the seeds' spread. Matching dense: paired non-inferiority,"
        f" margin δ = {a.margin_pp:g} pp, tested level by level from the first pruned one until a"
        f" level fails. Intervals are {1 - ALPHA:.0%}, in percentage points of test accuracy.",
        "",
    ]
    if 0 < a.max_seeds < FEW_SEEDS:
        lines += [
            f"**Warning: {_seeds(a.max_seeds)}.** Below {FEW_SEEDS} seeds the t-intervals are"
            " wide and their width rests on a spread estimated from very few values; read the"
            " smallest detectable differences before any inconclusive result.",
            "",
        ]
    if a.not_applicable:
        lines += [
            "Not applicable, excluded from every comparison (the criterion pruned nothing in any"
            " round, so the trial never left the dense level): "
            + "; ".join(a.not_applicable)
            + ".",
            "",
        ]
    return lines


def verdict(a: Analysis) -> list[str]:
    """Markdown lines: one short paragraph per question the sweep can answer."""
    c, prim = a.levels, a.primary
    if c.empty:
        return ["Not enough complete trials for any paired comparison yet."]
    lines: list[str] = method(a)
    body_start = len(lines)

    def section(title: str, sentences: list[str]) -> None:
        if sentences:
            lines.extend([f"**{title}**", "", *[f"- {s}" for s in sentences], ""])

    def compared(kind: str, who, better, worse, drop: set[str]) -> list[str]:
        out = []
        for name, s in c[c["kind"] == kind].groupby("comparison", sort=True):
            p = prim[prim["comparison"] == name] if len(prim) else prim
            out.append(
                f"{who(s)}{_group_suffix(s, drop)}: "
                + describe(p, s, better(s), worse(s), a.margin_pp)
                + "."
            )
        return out

    def a_(s):
        return s["a"].iloc[0]

    section(
        "Does the ticket beat its random controls?",
        compared(
            "control",
            lambda s: (
                f"{s['criterion'].iloc[0] if 'criterion' in s else 'the'} tickets vs"
                f" their {s['b'].iloc[0]} controls"
            ),
            lambda s: "better",
            lambda s: "worse",
            {"criterion"},
        ),
    )
    section(
        "How do the criteria compare (paired by seed, tickets of one schedule)?",
        compared(
            "criterion",
            lambda s: f"{a_(s)} vs {s['b'].iloc[0]}",
            lambda s: f"{a_(s)} is better",
            lambda s: f"{a_(s)} is worse",
            {"control"},
        ),
    )
    section(
        "Does iterative pruning beat one-shot?",
        compared(
            "schedule",
            lambda s: str(s["criterion"].iloc[0]),
            lambda s: "iterative is better than one-shot",
            lambda s: "iterative is worse than one-shot",
            {"criterion", "control"},
        ),
    )
    section(
        "Do the other axes matter?",
        compared(
            "axis",
            lambda s: s["comparison"].iloc[0].split(" (")[0],
            lambda s: f"{a_(s)} is better",
            lambda s: f"{a_(s)} is worse",
            {"control"},
        ),
    )
    ni = a.noninferiority
    sentences = []
    if len(ni):
        tickets = ni[ni["control"].fillna("none") == "none"] if "control" in ni else ni
        for name, s in tickets.groupby("comparison", sort=True):
            who = s["criterion"].iloc[0] if "criterion" in s else "the ticket"
            sched = s["schedule"].iloc[0] if "schedule" in s else ""
            label = f"{who} ({sched.replace('_', '-')})" if sched else who
            series = c[(c["kind"] == "dense") & (c["comparison"] == name)]
            sentences.append(
                f"{label}{_group_suffix(s, {'criterion', 'schedule', 'control'})}: "
                + breakdown(s, series, a.margin_pp)
                + "."
            )
    section("At what sparsity does the ticket stop matching dense?", sentences)
    if len(lines) == body_start:
        return ["No comparison applies to this sweep (one arm, one criterion)."]
    return lines
