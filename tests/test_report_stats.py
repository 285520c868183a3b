"""The report's statistics and table rules on small hand-made frames (no MLflow)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lth_ray.report.plots import weight_ticks
from lth_ray.report.stats import (
    accuracy_interval,
    chance_collapse_level,
    dense_band,
    fmt_level,
    level_stats,
    t_interval,
)
from lth_ray.report.tidy import RunRecord, latest_per_step, tidy_trials

T_975 = {1: 12.706204736174707, 2: 4.302652729911275, 4: 2.7764451051977987}  # t tables


def test_t_interval_matches_the_textbook_formula():
    ci = t_interval([1.0, 2.0, 3.0, float("nan")])  # NaN is ignored
    assert (ci.n, ci.mean, ci.sd) == (3, 2.0, 1.0)
    assert ci.high - ci.mean == pytest.approx(T_975[2] / math.sqrt(3))
    ci = t_interval([70.0, 72.0, 75.0, 71.0, 77.0])
    sd = np.std([70, 72, 75, 71, 77], ddof=1)
    assert (ci.low, ci.high) == pytest.approx(
        (73 - T_975[4] * sd / math.sqrt(5), 73 + T_975[4] * sd / math.sqrt(5))
    )
    one = t_interval([0.7])
    assert one.mean == 0.7 and math.isnan(one.low) and math.isnan(one.high)
    assert t_interval([]).n == 0


def test_accuracy_intervals_stay_within_0_and_100_percent():
    ci = accuracy_interval([99.0, 100.0])  # t(0.975, 1) = 12.7: the raw interval passes 100
    assert t_interval([99.0, 100.0]).high > 100
    assert ci.high == 100.0 and ci.low == pytest.approx(99.5 - T_975[1] * 0.5)
    assert accuracy_interval([1.0, 3.0]).low == 0.0


def _levels(accs: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"round": range(len(accs)), "acc_mean_pct": accs,
                         "weights_remaining_pct": [100 * 0.8**r for r in range(len(accs))]})  # fmt: skip


def test_chance_collapse_is_the_first_level_below_chance_plus_five_in_round_order():
    lv = _levels([75, 40, 14.9, 30, 11])
    assert chance_collapse_level(lv, chance_pct=10)["round"] == 2
    assert chance_collapse_level(_levels([75, 15.0, 16]), chance_pct=10) is None  # strict <


def _rows(**cols) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    base = {"criterion": ["m"] * n, "prune_rate": [0.2] * n, "schedule": ["iterative"] * n,
            "control": ["none"] * n, "status": ["complete"] * n, "sparsity": [0.0] * n,
            "best_epoch": [5.0] * n, "test_loss": [1.0] * n, "val_loss_best": [1.0] * n,
            "skipped": [0.0] * n}  # fmt: skip
    return pd.DataFrame({**base, **cols})


def test_dense_band_counts_each_seed_once():
    # two criteria share seeds 0 and 1 (same dense nets): n = 2 seeds, not 4 trials
    rows = _rows(criterion=["a", "a", "b", "b"], seed=[0, 1, 0, 1], round=[0] * 4,
                 test_acc=[0.70, 0.74, 0.70, 0.74], weights_remaining=[100.0] * 4)  # fmt: skip
    band = dense_band(rows)
    assert band.n == 2 and band.mean == pytest.approx(72.0)
    assert band.high - band.mean == pytest.approx(T_975[1] * math.sqrt(8) / math.sqrt(2))


def test_levels_use_complete_trials_and_record_seed_spread():
    rows = _rows(seed=[0, 0, 1, 1, 2], round=[0, 1, 0, 1, 0], test_acc=[0.7, 0.6, 0.8, 0.7, 0.1],
                 weights_remaining=[100.0, 80.0, 100.0, 90.0, 100.0],
                 status=["complete"] * 4 + ["incomplete"])  # fmt: skip
    lv = level_stats(rows).set_index("round")
    assert list(lv["n"]) == [2, 2]
    assert lv.loc[0, "acc_mean_pct"] == pytest.approx(75.0)
    assert lv.loc[1, "weights_remaining_pct"] == pytest.approx(85.0)  # a seed skipped a round
    assert lv.loc[1, "weights_remaining_spread_pct"] == pytest.approx(10.0)


def _metrics(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])


def test_latest_per_step_keeps_the_last_logged_value():
    m = _metrics(
        [("r", "test_acc", 1, 0.5, 10), ("r", "test_acc", 1, 0.6, 20), ("r", "test_acc", 0, 0.7, 5)]
    )
    out = latest_per_step(m).set_index("step")["value"]
    assert out.to_dict() == {0: 0.7, 1: 0.6}


def _run(
    run_id: str, status: str, start: int, seed: str = "0", total: str | None = "2"
) -> RunRecord:
    tags = {"lth_ray.trial": f"m-s{seed}", "criterion": "m", "seed": seed, "prune_rate": "0.2",
            "schedule": "iterative", "control": "none", "lth_ray.num_classes": "10"}  # fmt: skip
    if total is not None:
        tags["lth_ray.rounds_total"] = total
    return RunRecord(run_id, status, start, tags)


def test_duplicate_runs_of_a_trial_keep_the_complete_one_and_say_so():
    runs = [_run("old", "FAILED", 1), _run("new", "FINISHED", 2), _run("newest", "RUNNING", 3)]
    m = _metrics([(r, "test_acc", s, 0.5, 1) for r in ("old", "new") for s in (0, 1)]
                 + [("newest", "test_acc", 0, 0.5, 1)])  # fmt: skip
    warnings: list[str] = []
    t = tidy_trials(runs, m, "sw", "exp", warnings)
    assert set(t["run_id"]) == {"new"} and (t["status"] == "complete").all()
    assert len(warnings) == 1 and "3 MLflow runs" in warnings[0] and "old" in warnings[0]


def test_missing_rounds_total_counts_finished_as_complete_with_a_warning():
    runs = [_run("a", "FINISHED", 1, total=None), _run("b", "KILLED", 1, seed="1", total=None)]
    m = _metrics([("a", "test_acc", 0, 0.5, 1), ("b", "test_acc", 0, 0.5, 1)])
    warnings: list[str] = []
    t = tidy_trials(runs, m, "sw", "exp", warnings).set_index("run_id")
    assert t.loc["a", "status"] == "complete" and t.loc["b", "status"] == "incomplete"
    assert any("lth_ray.rounds_total" in w for w in warnings)


def test_weight_ticks_are_actual_levels_thinned_evenly():
    lv = [100 * 0.8**r for r in range(16)]
    assert [fmt_level(t) for t in weight_ticks(lv)] == [
        "100",
        "64",
        "41",
        "26.2",
        "16.8",
        "10.7",
        "6.9",
        "3.5",
    ]
    lv20 = [100 * 0.8**r for r in range(20)]
    assert [fmt_level(t) for t in weight_ticks(lv20)] == [
        "100",
        "51.2",
        "26.2",
        "13.4",
        "6.9",
        "3.5",
        "1.4",
    ]
    assert [fmt_level(t) for t in weight_ticks([100, 80, 64])] == ["100", "80", "64"]
    assert fmt_level(0.9223) == "0.92"
