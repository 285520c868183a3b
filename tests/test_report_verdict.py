"""The verdict's sentences on hand-made comparisons: what is claimed, and what is only shown."""

from __future__ import annotations

import pandas as pd

from lth_ray.report.verdict import breakdown

LEVELS = [80.0, 64.0, 51.2, 41.0]


def _ni(matches, noninferior, diffs):
    return pd.DataFrame(
        {
            "round": range(1, len(LEVELS) + 1),
            "weights_remaining_pct": LEVELS,
            "n": 5,
            "matches": matches,
            "noninferior": noninferior,
            "mean_diff_pp": diffs,
            "ci_low_pp": [d - 0.4 for d in diffs],
            "ci_high_pp": [d + 0.4 for d in diffs],
        }
    )


def _series(calls, diffs):
    return pd.DataFrame(
        {
            "round": range(1, len(LEVELS) + 1),
            "weights_remaining_pct": LEVELS,
            "n": 5,
            "m": len(LEVELS),
            "call": calls,
            "mean_diff_pp": diffs,
            "ci_adj_low_pp": [d - 0.5 for d in diffs],
            "ci_adj_high_pp": [d + 0.5 for d in diffs],
        }
    )


def test_a_level_within_the_margin_after_the_first_failure_is_named_but_not_claimed():
    diffs = [0.0, -0.2, -0.9, -0.55]
    ni = _ni([True, True, False, False], [True, True, False, True], diffs)
    series = _series(["inconclusive", "inconclusive", "worse", "worse"], diffs)
    text = breakdown(ni, series, margin_pp=1.0)
    assert text.startswith("matches dense down to 64% of weights")
    assert "not shown at 51.2% (-0.9 pp [-1.3, -0.5], 5 seeds)" in text
    assert (
        "the lower bound clears −1 pp again at 1 of 1 sparser levels (41%), which is not"
        " claimed: the fixed sequence stops at its first failure"
    ) in text
    # within the margin and below dense at once: both are said, each with its own test
    assert "falls below it from 51.2% on (-0.9 pp [-1.4, -0.4], Bonferroni over 4 levels)" in text


def test_every_level_matching_names_the_sparsest_and_nothing_beyond():
    diffs = [0.1, 0.0, -0.1, -0.2]
    ni = _ni([True] * 4, [True] * 4, diffs)
    text = breakdown(ni, _series(["inconclusive"] * 4, diffs), margin_pp=1.0)
    assert text.startswith("matches dense down to 41% of weights, the sparsest level")
    assert "clears" not in text and "below" not in text
