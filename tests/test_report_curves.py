"""Learning curves split back into rounds from the per-evaluation metrics (no MLflow)."""

from __future__ import annotations

import pandas as pd
import pytest

from lth_ray import schema
from lth_ray.report.curves import curves_table, learning_curves, pick_weights
from lth_ray.report.tidy import RunRecord, tidy_trials


def _trial(run_id: str, control: str, evaluations: list[int]):
    tags = {
        schema.TAG_TRIAL: run_id,
        schema.TAG_CRITERION: "magnitude",
        schema.TAG_SEED: "0",
        schema.TAG_PRUNE_RATE: "0.2",
        schema.TAG_SCHEDULE: "iterative",
        schema.TAG_CONTROL: control,
        schema.TAG_ROUNDS_TOTAL: str(len(evaluations)),
    }
    rows = []
    for r, n in enumerate(evaluations):
        for key, v in (("test_acc", 0.8), ("weights_remaining", 100 * 0.8**r), ("evaluations", n)):
            rows.append((run_id, key, r, v, 1))
    step = 0
    for r, n in enumerate(evaluations):
        for i in range(1, n + 1):
            step += 1
            rows.append((run_id, "epoch_val_acc", step, 0.1 * r + 0.01 * i, 1))
            rows.append((run_id, "epoch_val_loss", step, 1.0 - 0.1 * i, 1))
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


def test_levels_are_dense_and_spread_down_to_the_sparsest():
    weights = [100 * 0.8**r for r in range(15)]
    picked = pick_weights(weights + weights[:5], 4)  # levels repeat across trials
    assert picked[0] == 100 and picked[-1] == weights[14] and len(picked) == 4
    assert picked == sorted(picked, reverse=True) and set(picked) <= set(weights)
