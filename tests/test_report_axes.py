"""The report on a sweep that varies fields beyond criterion/seed/rate: hand-made runs, no MLflow."""

from __future__ import annotations

import pandas as pd
import pytest

from lth_ray import schema
from lth_ray.report.plots import FigureBuilder
from lth_ray.report.stats import group_keys, level_stats, summarize
from lth_ray.report.tidy import RunRecord, tidy_trials

ACC = {  # (rewind, width) -> test accuracy per round, seed offsets added below
    ("init", "0.125"): [0.90, 0.80, 0.70],
    ("1ep", "0.125"): [0.90, 0.85, 0.82],
    ("init", "0.25"): [0.95, 0.93, 0.90],
    ("1ep", "0.25"): [0.95, 0.94, 0.93],
}


def _sweep(controls: int = 0) -> tuple[list[RunRecord], pd.DataFrame]:
    runs, rows = [], []
    for (rewind, width), accs in ACC.items():
        for seed in (0, 1):
            arms = [("none", 0)] + [("reinit", k) for k in range(controls)]
            for control, k in arms:
                run_id = f"{rewind}-{width}-{seed}-{control}{k}"
                tags = {
                    schema.TAG_TRIAL: run_id,
                    schema.TAG_CRITERION: "magnitude",
                    schema.TAG_SEED: str(seed),
                    schema.TAG_PRUNE_RATE: "0.2",
                    schema.TAG_SCHEDULE: "iterative",
                    schema.TAG_CONTROL: control,
                    schema.TAG_CONTROL_INDEX: str(k),
                    schema.TAG_ROUNDS_TOTAL: "3",
                    schema.TAG_NUM_CLASSES: "10",
                    schema.TAG_AXES: "prune.rewind,model.width,seed",
                    "prune.rewind": rewind,
                    "model.width": width,
                }
                runs.append(RunRecord(run_id, "FINISHED", 1, tags))
                for r, acc in enumerate(accs):
                    value = acc + 0.01 * seed - (0.1 * r if control != "none" else 0) - 0.02 * k
                    for key, v in (
                        ("test_acc", value),
                        ("weights_remaining", 100 * 0.8**r),
                        ("sparsity", 1 - 0.8**r),
                        ("best_epoch", 3.0),
                        ("test_loss", 1.0),
                        ("val_loss_best", 1.0),
                        ("skipped", 0.0),
                    ):
                        rows.append((run_id, key, r, v, 1))
    return runs, pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])


def test_varying_fields_are_columns_and_groups():
    runs, metrics = _sweep()
    trials = tidy_trials(runs, metrics, "sw", "exp")
    assert {"prune.rewind", "model.width"} <= set(trials.columns)
    assert "seed" not in group_keys(trials) and "prune.rewind" in group_keys(trials)
    levels = level_stats(trials)
    assert len(levels) == 4 * 3 and set(levels["n"]) == {2}
    lv = levels[(levels["prune.rewind"] == "1ep") & (levels["model.width"] == "0.125")]
    assert list(lv.sort_values("round")["acc_mean_pct"]) == pytest.approx([90.5, 85.5, 82.5])
    summary = summarize(trials, levels)
    assert len(summary) == 4 and set(summary["n_seeds"]) == {2}
    row = summary[(summary["prune.rewind"] == "init") & (summary["model.width"] == "0.25")].iloc[0]
    assert row["dense_acc_mean_pct"] == pytest.approx(95.5)
    assert row["dense_acc_sd_pct"] == pytest.approx(pd.Series([95.0, 96.0]).std())


def test_repeated_controls_are_averaged_per_seed():
    runs, metrics = _sweep(controls=3)
    trials = tidy_trials(runs, metrics, "sw", "exp")
    levels = level_stats(trials)
    ctl = levels[(levels["control"] == "reinit") & (levels["prune.rewind"] == "init")]
    ctl = ctl[(ctl["model.width"] == "0.125") & (ctl["round"] == 1)].iloc[0]
    assert ctl["n"] == 2  # seeds, not 2 seeds x 3 controls
    # per seed: mean over k of (0.80 + 0.01 seed - 0.1 - 0.02 k) = 0.68 + 0.01 seed
    assert ctl["acc_mean_pct"] == pytest.approx(68.5)
    summary = summarize(trials, levels)
    assert set(summary.loc[summary["control"] == "reinit", "n_seeds"]) == {2}


def test_figures_compare_the_hue_and_facet_the_other_axes():
    runs, metrics = _sweep(controls=1)
    trials = tidy_trials(runs, metrics, "sw", "exp")
    levels = level_stats(trials)
    figs = FigureBuilder(trials, levels, "sw").all()
    assert {"accuracy_by_prune_rewind", "accuracy_by_model_width", "ticket_vs_controls"} <= set(
        figs
    )
    by_rewind = figs["accuracy_by_prune_rewind"]
    titles = [ax.get_title() for ax in by_rewind.axes if ax.get_visible() and ax.get_title()]
    assert titles == ["model.width = 0.125", "model.width = 0.25"]
    lines = {
        ln.get_gid()
        for ln in by_rewind.axes[0].get_lines()
        if str(ln.get_gid()).startswith("series:")
    }
    assert lines == {"series:init", "series:1ep"}
    # the criterion figure has one panel per (rewind, width) combination
    acc = figs["accuracy_vs_weights"]
    assert len([ax for ax in acc.axes if ax.get_visible() and ax.get_title()]) == 4
    hue = FigureBuilder(trials, levels, "sw", hue="prune.rewind").all()
    assert "accuracy_by_prune_rewind" not in hue  # it is the main figure now
    assert len([ax for ax in hue["accuracy_vs_weights"].axes if ax.get_title()]) == 2
    with pytest.raises(ValueError, match="not an axis"):
        FigureBuilder(trials, levels, "sw", hue="prune.rewnd")


def test_dense_only_sweeps_draw_no_weight_axis():
    runs, metrics = _sweep()
    for r in runs:
        r.tags[schema.TAG_ROUNDS_TOTAL] = "1"  # round 0 only, as in the precision study
    trials = tidy_trials(runs, metrics[metrics["step"] == 0], "sw", "exp")
    levels = level_stats(trials)
    assert len(levels) == 4 and (levels["round"] == 0).all()
    assert FigureBuilder(trials, levels, "sw").all() == {}


def test_early_stop_is_plotted_in_iterations_when_the_sweep_counts_in_iterations():
    runs, metrics = _sweep()
    extra = metrics[metrics["key"] == "best_epoch"].assign(
        key="best_iteration", value=lambda d: 100.0 * (d["step"] + 1)
    )
    metrics = pd.concat([metrics, extra], ignore_index=True)
    for unit in ("ep", "it"):
        for r in runs:
            r.tags[schema.TAG_STEPS_UNIT] = unit
        trials = tidy_trials(runs, metrics, "sw", "exp")
        levels = level_stats(trials)
        assert list(levels.sort_values("round")["best_iteration_mean"].unique()) == [
            100.0,
            200.0,
            300.0,
        ]
        fig = FigureBuilder(trials, levels, "sw").early_stop()
        ylabel = fig.axes[0].get_ylabel()
        assert ("iteration" in ylabel) == (unit == "it") and ("epoch" in ylabel) == (unit == "ep")
