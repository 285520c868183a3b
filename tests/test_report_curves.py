"""Learning curves split back into rounds from the per-evaluation metrics (no MLflow)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from lth_ray import schema
from lth_ray.report.curves import CURVE_KEYS, curves_table, learning_curves, pick_weights
from lth_ray.report.tidy import RunRecord, tidy_trials


def _trial(
    run_id: str,
    control: str,
    evaluations: list[int],
    seed: int = 0,
    per_eval: int | None = None,
    weights: list[float] | None = None,
    rate: float = 0.2,
):
    """`per_eval`: iterations between evaluations (None: epoch_iteration not logged, older runs)."""
    weights = weights or [100 * (1 - rate) ** r for r in range(len(evaluations))]
    tags = {
        schema.TAG_TRIAL: run_id,
        schema.TAG_CRITERION: "magnitude",
        schema.TAG_SEED: str(seed),
        schema.TAG_PRUNE_RATE: f"{rate:g}",
        schema.TAG_SCHEDULE: "iterative",
        schema.TAG_CONTROL: control,
        schema.TAG_ROUNDS_TOTAL: str(len(evaluations)),
    }
    rows = []
    for r, n in enumerate(evaluations):
        for key, v in (("test_acc", 0.8), ("weights_remaining", weights[r]), ("evaluations", n)):
            rows.append((run_id, key, r, v, 1))
    step = 0
    for r, n in enumerate(evaluations):
        for i in range(1, n + 1):
            step += 1
            rows.append((run_id, "epoch_val_acc", step, 0.1 * r + 0.01 * i, 1))
            rows.append((run_id, "epoch_val_loss", step, 1.0 - 0.1 * i, 1))
            if per_eval is not None:
                rows.append((run_id, "epoch_iteration", step, per_eval * i, 1))
    return RunRecord(run_id, "FINISHED", 1, tags), rows


def test_the_trial_curve_is_split_into_rounds():
    runs, rows = [], []
    for run_id, control, evals in (("t", "none", [3, 2, 2]), ("c", "reinit", [3, 2, 2])):
        run, r = _trial(run_id, control, evals)
        runs.append(run)
        rows += r
    metrics = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    trials = tidy_trials(runs, metrics[~metrics["key"].str.startswith("epoch_")], "sw", "exp")
    table = curves_table(trials, metrics)
    t = table[table["arm"] == "ticket"].sort_values(["round", "evaluation"])
    assert list(zip(t["round"], t["evaluation"])) == [
        (0, 1),
        (0, 2),
        (0, 3),
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert list(t["val_acc_pct"]) == pytest.approx([1, 2, 3, 11, 12, 21, 22])
    assert set(table["arm"]) == {"ticket", "reinit"}
    fig = learning_curves(table)
    assert fig is not None
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles == ["magnitude · ticket", "magnitude · reinit"]
    assert learning_curves(table, "val_loss") is not None


def _table(specs) -> pd.DataFrame:
    runs, rows = [], []
    for spec in specs:
        run, r = _trial(**spec)
        runs.append(run)
        rows += r
    metrics = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    trials = tidy_trials(runs, metrics[~metrics["key"].str.startswith("epoch_")], "sw", "exp")
    return curves_table(trials, metrics)


def _level_lines(ax) -> dict[str, object]:
    return {ln.get_gid(): ln for ln in ax.get_lines() if str(ln.get_gid()).startswith("level:")}


def test_curves_are_drawn_against_iterations_at_levels_of_weights_remaining():
    # seed 1 skips round 1 (stays at 100%): its round 2 is at the 80% level, its round 1 a replicate
    # of the dense level; levels are chosen by weights remaining, so its curves join seed 0's there
    table = _table(
        [
            {"run_id": "s0", "control": "none", "evaluations": [3, 3, 3], "per_eval": 50},
            {"run_id": "s1", "control": "none", "evaluations": [3, 3, 3], "per_eval": 50,
             "seed": 1, "weights": [100.0, 100.0, 80.0]},
        ]
    )  # fmt: skip
    assert list(table.loc[table["run_id"] == "s0", "iteration"]) == [50, 100, 150] * 3
    fig = learning_curves(table)
    ax = fig.axes[0]
    lines = _level_lines(ax)
    assert set(lines) == {"level:100", "level:80", "level:64"}
    for line in lines.values():
        assert list(line.get_xdata()) == [50, 100, 150]  # iterations within the round
    assert "iterations within the round" in {a.get_xlabel() for a in fig.axes}
    # the 80% level: seed 0's round 1 (0.11, 0.12, 0.13) and seed 1's round 2 (0.21, 0.22, 0.23)
    assert list(lines["level:80"].get_ydata()) == pytest.approx([16, 17, 18])
    # the dense level takes each trial's first round there (seed 1's round 1 is a replicate)
    assert list(lines["level:100"].get_ydata()) == pytest.approx([1, 2, 3])
    thin = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith("_trial:")]
    assert len(thin) == 3 + 2  # every trial at every level it reached (seed 1: not 64%)
    assert all(ln.get_linewidth() < lines["level:80"].get_linewidth() for ln in thin)
    colors = [tuple(np.round(ln.get_color(), 3)) for ln in lines.values()]
    assert len(set(colors)) == 3  # one colour per level
    assert (
        min(np.abs(np.subtract(a, b)).sum() for a, b in itertools.combinations(colors, 2)) > 0.3
    )  # far apart, not neighbouring shades of one map
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:3] == ["100% weights", "80% weights", "64% weights"]


def test_runs_without_iterations_fall_back_to_the_evaluation_index_and_say_so():
    table = _table([{"run_id": "t", "control": "none", "evaluations": [3, 2]}])
    assert table["iteration"].isna().all()
    fig = learning_curves(table)
    assert list(_level_lines(fig.axes[0])["level:100"].get_xdata()) == [1, 2, 3]
    assert any("iterations not logged" in a.get_xlabel() for a in fig.axes)


def test_each_prune_rate_gets_its_own_panels_and_levels():
    table = _table(
        [
            {"run_id": f"r{rate}", "control": "none", "evaluations": [2] * 6, "per_eval": 10,
             "rate": rate}
            for rate in (0.2, 0.5)
        ]
    )  # fmt: skip
    fig = learning_curves(table)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in axes] == [
        "magnitude · ticket · 20%/round",
        "magnitude · ticket · 50%/round",
    ]
    for ax, rate in zip(axes, (0.2, 0.5)):
        levels = sorted((float(g.split(":")[1]) for g in _level_lines(ax)), reverse=True)
        assert levels[0] == 100 and levels[-1] == pytest.approx(100 * (1 - rate) ** 5, rel=1e-5)
        assert len(levels) == 4


def test_levels_are_dense_and_spread_down_to_the_sparsest():
    weights = [100 * 0.8**r for r in range(15)]
    picked = pick_weights(weights + weights[:5], 4)  # levels repeat across trials
    assert picked[0] == 100 and picked[-1] == weights[14] and len(picked) == 4
    assert picked == sorted(picked, reverse=True) and set(picked) <= set(weights)


def test_the_curves_read_what_a_trial_run_logs(tmp_path):
    """TrialRun.log_round writes each evaluation's iteration beside its accuracy and loss; the
    curves table reads them back from a real store as the x of the learning curves."""
    from mlflow import MlflowClient

    from lth_ray.sweep.tracking import TrialRun
    from tests.test_report_synth import store_uri

    client = MlflowClient(store_uri(tmp_path))
    run_id = client.create_run(client.create_experiment("abl")).info.run_id
    trial = TrialRun.__new__(TrialRun)  # the logging half only: no sweep context needed
    trial.client, trial.run_id, trial.logged_rounds = client, run_id, set()
    offset = 0
    for r, wr in enumerate((100.0, 80.0)):
        curve = [
            {"epoch": e, "iteration": 40 * e, "train_loss": 1.0, "val_loss": 1.0 / e,
             "val_acc": 0.5 + 0.1 * e + 0.01 * r}
            for e in (1, 2, 3)
        ]  # fmt: skip
        record = {"round": r, "test_acc": 0.8, "weights_remaining": wr, "evaluations": 3,
                  "iterations": 120}  # fmt: skip
        assert trial.log_round(record, curve, offset)
        offset += len(curve)
    rows = [
        (run_id, key, m.step, m.value, m.timestamp)
        for key in ("test_acc", "weights_remaining", "evaluations", "iterations", *CURVE_KEYS)
        for m in client.get_metric_history(run_id, key)
    ]
    metrics = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    tags = {schema.TAG_TRIAL: "t", schema.TAG_CRITERION: "magnitude", schema.TAG_SEED: "0",
            schema.TAG_PRUNE_RATE: "0.2", schema.TAG_ROUNDS_TOTAL: "2"}  # fmt: skip
    runs = [RunRecord(run_id, "FINISHED", 1, tags)]
    trials = tidy_trials(runs, metrics[~metrics["key"].str.startswith("epoch_")], "sw", "exp")
    assert list(trials["iterations"]) == [120, 120]
    table = curves_table(trials, metrics).sort_values(["round", "evaluation"])
    assert list(table["iteration"]) == [40, 80, 120] * 2
    assert list(table["val_acc_pct"]) == pytest.approx([60, 70, 80, 61, 71, 81])
