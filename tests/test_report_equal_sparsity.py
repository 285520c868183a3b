"""Comparisons at equal sparsity, primary tests, simultaneous intervals and non-inferiority, on runs of
known values (no MLflow)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lth_ray import schema
from lth_ray.report.compare import ALPHA, analyse, area_mean, mdd
from lth_ray.report.equal_sparsity import interpolate, nominal_grid
from lth_ray.report.stats import level_stats, summarize
from lth_ray.report.tidy import RunRecord, tidy_trials
from lth_ray.report.verdict import verdict

T975 = {2: 4.302652729911275}
T80_DF2 = 0.6 / math.sqrt(0.32)  # Student t, 2 df: t_p = (2p - 1) / sqrt(2 p (1 - p))
WR = [100.0, 80.0, 64.0, 51.2]


def _table(trials: list[dict]) -> pd.DataFrame:
    """trials: dicts with criterion, seed, acc (% per round) and optional schedule, control,
    wr (weights remaining per round), skipped (per round)."""
    runs, rows = [], []
    for t in trials:
        schedule, control = t.get("schedule", "iterative"), t.get("control", "none")
        run_id = f"{t['criterion']}-{t['seed']}-{schedule}-{control}"
        acc = t["acc"]
        wr = t.get("wr", WR[: len(acc)])
        skipped = t.get("skipped", [0] * len(acc))
        tags = {
            schema.TAG_TRIAL: run_id,
            schema.TAG_CRITERION: t["criterion"],
            schema.TAG_SEED: str(t["seed"]),
            schema.TAG_PRUNE_RATE: "0.2",
            schema.TAG_SCHEDULE: schedule,
            schema.TAG_CONTROL: control,
            schema.TAG_ROUNDS_TOTAL: str(len(acc)),
            schema.TAG_NUM_CLASSES: "10",
        }
        runs.append(RunRecord(run_id, "FINISHED", 1, tags))
        for r, (a, w, s) in enumerate(zip(acc, wr, skipped)):
            for key, value in (("test_acc", a / 100), ("weights_remaining", w),
                               ("sparsity", 1 - w / 100), ("skipped", s), ("best_epoch", 2.0),
                               ("test_loss", 1.0), ("val_loss_best", 1.0)):  # fmt: skip
                rows.append((run_id, key, r, value, 1))
    metrics = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    return tidy_trials(runs, metrics, "sw", "exp")


def test_interpolation_is_linear_in_log_weights_and_never_extrapolates():
    mid = math.sqrt(80 * 64)  # halfway between 80% and 64% in log(weights remaining)
    out = interpolate([100, 80, 64], [90.0, 86.0, 80.0], [100, 80, mid, 64, 51.2, 120])
    assert out[:4] == pytest.approx([90.0, 86.0, 83.0, 80.0])
    assert math.isnan(out[4]) and math.isnan(out[5])  # beyond the trial's range: not reached
    # a skipped round retrained the same mask: both rounds are one sparsity, averaged
    rep = interpolate([100, 100, 80], [90.0, 88.0, 86.0], [100, math.sqrt(100 * 80)])
    assert rep == pytest.approx([89.0, 87.5])
    # by hand in log space: 70% lies at fraction log(80/70)/log(80/64) between 80% and 64%
    f = math.log(80 / 70) / math.log(80 / 64)
    assert interpolate([100, 80, 64], [90, 86, 80], [70])[0] == pytest.approx(86 - 6 * f)


def test_the_grid_is_the_schedule_of_trials_that_prune_every_round():
    t = _table([
        {"criterion": "magnitude", "seed": 0, "acc": [90, 89, 88, 87]},
        {"criterion": "stability", "seed": 0, "acc": [90, 89, 88, 87],
         "wr": [100, 100, 80, 64], "skipped": [0, 1, 0, 0]},
    ])  # fmt: skip
    t["acc_pct"] = t["test_acc"] * 100
    grid = nominal_grid(t)
    assert list(grid["weights_remaining_pct"]) == pytest.approx(WR)


def _skip_design() -> list[dict]:
    """Magnitude on the schedule; stability seed 0 skipped round 1, so at round r it sits one level
    behind; seeds 1 and 2 prune every round."""
    trials = []
    for seed in range(3):
        trials.append({"criterion": "magnitude", "seed": seed,
                       "acc": [90.0, 89.0 + seed * 0.1, 88.0, 86.0 + seed * 0.2]})  # fmt: skip
    trials.append({"criterion": "stability", "seed": 0, "acc": [90.0, 89.5, 87.0, 85.0],
                   "wr": [100, 100, 80, 64], "skipped": [0, 1, 0, 0]})  # fmt: skip
    for seed in (1, 2):
        trials.append({"criterion": "stability", "seed": seed, "acc": [90.0, 88.0, 87.0, 84.0]})
    return trials


def test_pairs_are_formed_at_equal_sparsity_when_an_arm_skips_rounds():
    c = compare_rows(_skip_design(), "criterion")
    at80 = c[c["weights_remaining_pct"].round(6) == 80.0].iloc[0]
    # seed 0's stability reached 80% at its round 2 (87.0), not at round 1 (still dense)
    d80 = [89.0 - 87.0, 89.1 - 88.0, 89.2 - 88.0]
    assert at80["n"] == 3 and at80["mean_diff_pp"] == pytest.approx(np.mean(d80))
    at64 = c[c["weights_remaining_pct"].round(6) == 64.0].iloc[0]
    assert at64["mean_diff_pp"] == pytest.approx(np.mean([88.0 - 85.0, 88.0 - 87.0, 88.0 - 87.0]))
    # 51.2%: seed 0 of stability never got there; it is left out, not extrapolated
    at51 = c[c["weights_remaining_pct"].round(6) == 51.2].iloc[0]
    assert at51["n"] == 2 and at51["n_not_reached"] == 1
    assert at51["mean_diff_pp"] == pytest.approx(np.mean([86.2 - 84.0, 86.4 - 84.0]))


def compare_rows(trials: list[dict], kind: str, **options) -> pd.DataFrame:
    c = analyse(_table(trials), **options).levels
    return c[c["kind"] == kind].sort_values("round")


def test_a_one_shot_seed_that_cannot_prune_is_not_applicable_and_named():
    trials = []
    for seed in range(3):
        trials.append({"criterion": "magnitude", "seed": seed, "schedule": "one_shot",
                       "acc": [90.0, 89.0, 88.0 - seed * 0.1, 86.0]})  # fmt: skip
        stuck = seed == 2  # best == final at round 0: every level skipped, the net stays dense
        trials.append({"criterion": "stability", "seed": seed, "schedule": "one_shot",
                       "acc": [90.0, 88.0 + seed * 0.3, 87.0, 84.0 + seed * 0.1],
                       "wr": [100.0] * 4 if stuck else WR,
                       "skipped": [0, 1, 1, 1] if stuck else [0] * 4})  # fmt: skip
    a = analyse(_table(trials))
    assert a.not_applicable == ["stability · one_shot · none: seed 2"]
    crit = a.levels[a.levels["kind"] == "criterion"]
    assert (crit["n"] == 2).all()  # compared on seeds 0 and 1 only
    dense = a.noninferiority[a.noninferiority["criterion"] == "stability"]
    assert (dense["n"] == 2).all()
    text = "\n".join(verdict(a))
    assert "Not applicable, excluded from every comparison" in text
    assert "stability · one_shot · none: seed 2" in text


def _dense_design(level1: list[float], level2: list[float]) -> list[dict]:
    """Level - dense per seed given directly (dense 90% on every seed)."""
    return [
        {"criterion": "magnitude", "seed": s, "acc": [90.0, 90.0 + d1, 90.0 + d2]}
        for s, (d1, d2) in enumerate(zip(level1, level2))
    ]


def test_noninferiority_with_a_margin_on_known_values():
    trials = _dense_design([-0.5, -0.3, -0.1], [-2.0, -2.2, -1.8])
    half = T975[2] * 0.2 / math.sqrt(3)  # sd 0.2 pp at both levels
    a = analyse(_table(trials), margin_pp=1.0)
    ni = a.noninferiority.sort_values("round")
    assert ni["ci_low_pp"].tolist() == pytest.approx([-0.3 - half, -2.0 - half])
    # -0.797 > -1: level 1 matches; -2.5 is not above -1: level 2 does not
    assert ni["noninferior"].tolist() == [True, False]
    assert ni["matches"].tolist() == [True, False]
    # a margin of 0.5 pp: level 1's lower bound -0.797 is below -0.5, so nothing matches
    tight = analyse(_table(trials), margin_pp=0.5).noninferiority
    assert not tight["matches"].any()
    # a later level inside the margin never restarts the run (fixed sequence)
    later = _dense_design([-3.0, -3.2, -2.8], [0.0, 0.1, -0.1])
    run = analyse(_table(later)).noninferiority.sort_values("round")
    assert run["noninferior"].tolist() == [False, True] and not run["matches"].any()


def test_summary_and_verdict_agree_on_matches_dense():
    trials = _dense_design([-0.5, -0.3, -0.1], [-2.0, -2.2, -1.8])
    t = _table(trials)
    a = analyse(t)
    summary = summarize(t, level_stats(t), a.noninferiority).iloc[0]
    assert summary["matches_dense_round"] == 1
    assert summary["matches_dense_weights_remaining_pct"] == pytest.approx(80.0)
    text = "\n".join(verdict(a))
    said = re.search(r"matches dense down to ([0-9.]+)% of weights", text)
    assert said and float(said.group(1)) == pytest.approx(80.0)
    # the same data with a margin that level 1 misses: neither says it matches
    b = analyse(t, margin_pp=0.5)
    assert math.isnan(summarize(t, level_stats(t), b.noninferiority).iloc[0]["matches_dense_round"])
    assert "not shown to match dense at the first pruned level, 80%" in "\n".join(verdict(b))


def test_simultaneous_intervals_agree_with_adjusted_p_values():
    rng = np.random.default_rng(0)
    trials = []
    for seed in range(4):
        base = [90.0, 89.0, 88.0, 86.0]
        trials.append({"criterion": "magnitude", "seed": seed, "acc": base})
        noise = rng.normal(0, 0.4, 4)
        shift = [0.0, 0.2, 1.0, 3.0]  # from nothing to a clear effect
        trials.append({"criterion": "magnitude", "seed": seed, "control": "reinit",
                       "acc": [base[0]] + [b - s + e for b, s, e in
                                           zip(base[1:], shift[1:], noise[1:])]})  # fmt: skip
    c = analyse(_table(trials)).levels
    assert len(c) and c["call"].isin(["better", "worse", "inconclusive"]).all()
    for _, r in c.iterrows():
        excludes_zero = r["ci_adj_low_pp"] > 0 or r["ci_adj_high_pp"] < 0
        assert excludes_zero == (r["p_adj"] < ALPHA)
        assert (r["call"] != "inconclusive") == excludes_zero
        assert r["p_adj"] == pytest.approx(min(1.0, r["m"] * r["p"]))
        q = sps.t.ppf(1 - ALPHA / (2 * r["m"]), r["n"] - 1)
        half = q * r["sd_pp"] / math.sqrt(r["n"])
        assert r["ci_adj_high_pp"] - r["mean_diff_pp"] == pytest.approx(half)
    control = c[c["kind"] == "control"]
    assert set(control["m"]) == {3} and control.iloc[-1]["call"] == "better"


def test_primary_test_is_the_mean_difference_over_log_sparsity():
    # on an even log grid the trapezoid mean of 1, 2, 3 is (0.5 + 2 + 1.5) / 2 = 2
    assert area_mean(np.array([100, 80, 64]), np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)
    trials = []
    for seed, extra in enumerate([0.0, 0.3, 0.6]):
        trials.append({"criterion": "magnitude", "seed": seed, "acc": [90.0, 89.0, 88.0, 87.0]})
        trials.append({"criterion": "magnitude", "seed": seed, "control": "reinit",
                       "acc": [90.0, 89.0 - 1 - extra, 88.0 - 2 - extra, 87.0 - 3 - extra]})  # fmt: skip
    p = analyse(_table(trials)).primary.iloc[0]
    # per seed: mean of 1+e, 2+e, 3+e over log sparsity = 2 + e; across seeds 2.3, sd 0.3
    assert (p["levels"], p["n"], p["m"]) == (3, 3, 1)
    assert p["mean_diff_pp"] == pytest.approx(2.3) and p["sd_pp"] == pytest.approx(0.3)
    assert (p["range_high_pct"], p["range_low_pct"]) == pytest.approx((80.0, 51.2))
    # a stated range narrows it: 64% to 51.2% averages 2.5 + e
    q = analyse(_table(trials), primary_range=(64.0, 51.2)).primary.iloc[0]
    assert q["levels"] == 2 and q["mean_diff_pp"] == pytest.approx(2.8)


def test_minimal_detectable_difference_on_known_values():
    assert mdd(1.0, 3) == pytest.approx((T975[2] + T80_DF2) / math.sqrt(3))  # 3.097 pp
    assert math.isnan(mdd(1.0, 1))
    # Bonferroni over m: the quantile moves to 1 - alpha / (2m)
    q = sps.t.ppf(1 - 0.05 / 8, 2) + T80_DF2
    assert mdd(0.5, 3, m=4) == pytest.approx(q * 0.5 / math.sqrt(3))
    # and the verdict prints it beside an inconclusive primary result: seeds differ by
    # -1, 0, +1 pp at every level, so the primary statistic has sd 1 pp
    trials = []
    for seed, d in enumerate([-1.0, 0.0, 1.0]):
        trials.append({"criterion": "magnitude", "seed": seed, "acc": [90.0, 89.0, 88.0]})
        trials.append({"criterion": "magnitude", "seed": seed, "control": "reinit",
                       "acc": [90.0, 89.0 - d, 88.0 - d]})  # fmt: skip
    text = "\n".join(verdict(analyse(_table(trials))))
    assert "inconclusive (the interval includes 0): +0.0 pp" in text
    assert "the smallest difference these seeds could detect is 3.1 pp" in text
    assert "**Warning: 3 seeds.**" in text


def test_iterative_vs_one_shot_skips_its_identical_first_level():
    trials = []
    for seed in range(3):
        for schedule, last in (("iterative", 86.0), ("one_shot", 84.0 - 0.1 * seed)):
            trials.append({"criterion": "magnitude", "seed": seed, "schedule": schedule,
                           "acc": [90.0, 89.0, 88.0, last]})  # fmt: skip
    c = compare_rows(trials, "schedule")
    assert list(c["round"]) == [2, 3]  # round 1: the same mask, the same draws, by construction
    p = analyse(_table(trials)).primary
    p = p[p["kind"] == "schedule"].iloc[0]
    assert p["range_high_pct"] == pytest.approx(64.0)
