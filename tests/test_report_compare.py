"""Paired comparisons and the verdict, on runs of known values (no MLflow)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lth_ray import schema
from lth_ray.report.compare import analyse, compare, holm, paired
from lth_ray.report.tidy import RunRecord, tidy_trials
from lth_ray.report.verdict import verdict

T975_DF2 = 4.302652729911275


def test_paired_difference_by_hand():
    s = paired([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3
    assert (s["n"], s["mean_diff_pp"], s["sd_pp"]) == (3, 2.0, 1.0)
    half = T975_DF2 / math.sqrt(3)
    assert (s["ci_low_pp"], s["ci_high_pp"]) == pytest.approx((2 - half, 2 + half))
    t = 2 / (1 / math.sqrt(3))
    assert s["t"] == pytest.approx(t)
    # Student t with 2 degrees of freedom: F(t) = 1/2 + t / (2 sqrt(t^2 + 2))
    assert s["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2))
    one = paired([5.0])
    assert one["mean_diff_pp"] == 5.0 and math.isnan(one["ci_low_pp"]) and math.isnan(one["p"])


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, float("nan"), 0.01]) == pytest.approx([0.5, float("nan"), 0.02], nan_ok=True)


def _run(run_id, criterion, seed, control="none", schedule="iterative", rounds=3):
    tags = {
        schema.TAG_TRIAL: run_id,
        schema.TAG_CRITERION: criterion,
        schema.TAG_SEED: str(seed),
        schema.TAG_PRUNE_RATE: "0.2",
        schema.TAG_SCHEDULE: schedule,
        schema.TAG_CONTROL: control,
        schema.TAG_ROUNDS_TOTAL: str(rounds),
        schema.TAG_NUM_CLASSES: "10",
    }
    return RunRecord(run_id, "FINISHED", 1, tags)


def _table(acc: dict) -> pd.DataFrame:
    """acc: (criterion, seed, control, schedule) -> test accuracy per round (fractions)."""
    runs, rows = [], []
    for (criterion, seed, control, schedule), values in acc.items():
        run_id = f"{criterion}-{seed}-{control}-{schedule}"
        runs.append(_run(run_id, criterion, seed, control, schedule, len(values)))
        for r, v in enumerate(values):
            for key, value in (
                ("test_acc", v),
                ("weights_remaining", 100 * 0.8**r),
                ("sparsity", 1 - 0.8**r),
                ("best_epoch", 2.0),
                ("test_loss", 1.0),
                ("val_loss_best", 1.0),
                ("skipped", 0.0),
            ):
                rows.append((run_id, key, r, value, 1))
    metrics = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    return tidy_trials(runs, metrics, "sw", "exp")


def test_ticket_vs_control_level_by_level_on_the_same_seeds():
    acc = {}
    for seed, (t1, c1) in enumerate([(0.80, 0.70), (0.82, 0.70), (0.84, 0.71)]):
        acc[("magnitude", seed, "none", "iterative")] = [0.85, t1, 0.60]
        acc[("magnitude", seed, "reinit", "iterative")] = [0.85, c1, 0.60 - 0.01 * seed]
    c = compare(_table(acc))
    row = c[(c["kind"] == "control") & (c["round"] == 1)].iloc[0]
    # differences 10, 12, 13 pp: mean 11.667, sd 1.5275
    d = [10.0, 12.0, 13.0]
    mean, sd = sum(d) / 3, pd.Series(d).std()
    assert (row["n"], row["mean_diff_pp"], row["sd_pp"]) == (
        3,
        pytest.approx(mean),
        pytest.approx(sd),
    )
    half = T975_DF2 * sd / math.sqrt(3)
    assert (row["ci_low_pp"], row["ci_high_pp"]) == pytest.approx((mean - half, mean + half))
    assert row["weights_remaining_pct"] == pytest.approx(80.0)
    # Bonferroni over the two pruned levels of this comparison (it has simultaneous intervals)
    series = c[c["kind"] == "control"].sort_values("round")
    assert list(series["round"]) == [1, 2]  # round 0 (the shared dense net) is not compared
    assert list(series["p_adj"]) == pytest.approx([min(1.0, 2 * p) for p in series["p"]])
    # the level-vs-dense series of the ticket: round 1 is 5, 3, 1 pp below dense
    dense = c[(c["kind"] == "dense") & (c["control"] == "none") & (c["round"] == 1)].iloc[0]
    assert dense["mean_diff_pp"] == pytest.approx(-3.0) and dense["n"] == 3


def test_criteria_and_schedules_are_compared_pairwise():
    acc = {}
    for seed in range(3):
        acc[("magnitude", seed, "none", "iterative")] = [0.85, 0.84 + 0.001 * seed, 0.80]
        acc[("random", seed, "none", "iterative")] = [0.85, 0.70, 0.50 + 0.01 * seed]
        acc[("magnitude", seed, "none", "one_shot")] = [0.85, 0.83, 0.75 - 0.01 * seed]
    c = compare(_table(acc))
    crit = c[(c["kind"] == "criterion") & (c["round"] == 2)].iloc[0]
    assert (crit["a"], crit["b"]) == ("magnitude", "random")
    assert crit["mean_diff_pp"] == pytest.approx(30 - 1.0)  # 80 - (50, 51, 52)
    sched = c[(c["kind"] == "schedule") & (c["round"] == 2)].iloc[0]
    assert sched["mean_diff_pp"] == pytest.approx(80 - 74.0)


def test_verdict_says_not_enough_seeds_with_one_seed():
    acc = {
        ("magnitude", 0, "none", "iterative"): [0.85, 0.80, 0.60],
        ("magnitude", 0, "reinit", "iterative"): [0.85, 0.70, 0.50],
    }
    text = "\n".join(verdict(analyse(_table(acc))))
    assert "not enough seeds to tell" in text
    assert "better" not in text and "falls below" not in text


def test_verdict_reports_only_what_the_intervals_show():
    acc = {}
    for seed in range(5):
        jitter = 0.002 * seed
        acc[("magnitude", seed, "none", "iterative")] = [
            0.85 + jitter,
            0.85 + jitter,
            0.70 + jitter,
        ]
        acc[("magnitude", seed, "reinit", "iterative")] = [
            0.85 + jitter,
            0.85 + 0.004 * (seed % 2),
            0.50,
        ]
    text = "\n".join(verdict(analyse(_table(acc))))
    # level 2: a 20 pp gap on every seed -> significant; level 1: noise -> not claimed
    assert "better at 1 of 2 levels (64%)" in text
    assert "inconclusive at the other 1 (the interval includes 0)" in text
    assert "falls below it from 64% on" in text and "down to 80%" in text
