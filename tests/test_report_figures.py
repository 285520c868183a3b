"""What the report's figures draw, read back from the matplotlib objects on a hand-made sweep whose
stability seeds skip rounds (no MLflow): each trial at its own sparsity, means on the common grid,
early-stop bands inside the budget, differences on the comparisons' grid with each seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lth_ray import schema
from lth_ray.report.compare import analyse
from lth_ray.report.compare_plots import comparison_figures
from lth_ray.report.equal_sparsity import nominal_grid
from lth_ray.report.plots import FigureBuilder
from lth_ray.report.stats import complete_rows, level_stats
from lth_ray.report.tidy import RunRecord, tidy_trials

ROUNDS, BUDGET = 6, 5
GRID = [100 * 0.8**k for k in range(ROUNDS)]
SKIPS = {("stability", 1): {2}, ("stability", 2): {2, 3}}  # rounds that pruned nothing
# Early-stop epochs whose t-interval runs past the budget (5, 5, 3) and below epoch 1 (1, 1, 3).
EPOCHS = {0: [3, 5, 1, 2, 3, 4], 1: [3, 5, 1, 2, 3, 4], 2: [3, 3, 3, 2, 3, 4]}


def acc(criterion: str, seed: int, pruned: int) -> float:
    """Accuracy (%) depends on the prunes done, not the round: replicates of a level agree."""
    return 90.0 + (0.5 if criterion == "stability" else 0.0) + 0.3 * seed - 0.4 * pruned


def sweep() -> pd.DataFrame:
    runs, rows = [], []
    for criterion in ("magnitude", "stability"):
        for seed in range(3):
            run_id = f"{criterion}-{seed}"
            tags = {
                schema.TAG_TRIAL: run_id,
                schema.TAG_CRITERION: criterion,
                schema.TAG_SEED: str(seed),
                schema.TAG_PRUNE_RATE: "0.2",
                schema.TAG_SCHEDULE: "iterative",
                schema.TAG_CONTROL: "none",
                schema.TAG_ROUNDS_TOTAL: str(ROUNDS),
                schema.TAG_NUM_CLASSES: "10",
            }
            runs.append(RunRecord(run_id, "FINISHED", 1, tags))
            pruned = 0
            for r in range(ROUNDS):
                skipped = r in SKIPS.get((criterion, seed), set())
                pruned += r > 0 and not skipped
                for key, v in (
                    ("test_acc", acc(criterion, seed, pruned) / 100),
                    ("weights_remaining", GRID[pruned]),
                    ("sparsity", 1 - GRID[pruned] / 100),
                    ("best_epoch", EPOCHS[seed][r]),
                    ("epochs", BUDGET),
                    ("test_loss", 1.0),
                    ("val_loss_best", 1.0),
                    ("skipped", float(skipped)),
                ):
                    rows.append((run_id, key, r, v, 1))
    metrics = pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])
    return tidy_trials(runs, metrics, "sw", "exp")


@pytest.fixture(scope="module")
def trials() -> pd.DataFrame:
    return sweep()


@pytest.fixture(scope="module")
def figures(trials):
    return FigureBuilder(trials, level_stats(trials), "sw").all()


def mean_lines(ax) -> dict[str, object]:
    return {
        ln.get_gid().split(":", 1)[1]: ln
        for ln in ax.get_lines()
        if str(ln.get_gid()).startswith("series:")
    }


def trial_lines(ax) -> dict[str, object]:
    """Thin per-trial lines, labelled _trial:<hue>:<trial>."""
    return {
        ln.get_label().split(":", 2)[2]: ln
        for ln in ax.get_lines()
        if str(ln.get_label()).startswith("_trial:")
    }


def test_every_trial_is_a_thin_line_at_its_own_sparsity(trials, figures):
    ax = figures["accuracy_vs_weights"].axes[0]
    lines = trial_lines(ax)
    assert set(lines) == {f"{c}-{s}" for c in ("magnitude", "stability") for s in range(3)}
    done = complete_rows(trials)
    for trial, line in lines.items():
        rows = done[done["trial"] == trial].sort_values("round")
        assert np.allclose(line.get_xdata(), rows["weights_remaining"])
        assert np.allclose(line.get_ydata(), rows["acc_pct"])
        assert line.get_linewidth() < mean_lines(ax)["magnitude"].get_linewidth()
    # the trial lines have no legend entry of their own, one shared entry says what they are
    legend = [t.get_text() for t in figures["accuracy_vs_weights"].legends[0].get_texts()]
    assert legend[:2] == ["magnitude", "stability"]
    assert sum(t.startswith("one complete trial") for t in legend) == 1


def test_means_sit_on_the_common_grid_where_every_seed_reached(trials, figures):
    ax = figures["accuracy_vs_weights"].axes[0]
    lines = mean_lines(ax)
    grid = list(nominal_grid(complete_rows(trials))["weights_remaining_pct"])
    assert grid == pytest.approx(GRID)
    assert np.allclose(lines["magnitude"].get_xdata(), GRID)
    # stability seed 2 pruned only 3 times: the grid points past 51.2% have no stability mean (a
    # mean of the seeds that got there would favour them), and no point sits at a round's mean
    # sparsity (round 2 of stability: seeds at 64, 80 and 80 %)
    assert np.allclose(lines["stability"].get_xdata(), GRID[:4])
    expected = [np.mean([acc("stability", s, k) for s in range(3)]) for k in range(4)]
    assert np.allclose(lines["stability"].get_ydata(), expected)


def test_early_stop_bands_stay_inside_the_budget(trials, figures):
    levels = level_stats(trials)
    assert (levels["best_epoch_ci_high"].dropna() <= BUDGET).all()
    assert (levels["best_epoch_ci_low"].dropna() >= 1).all()
    lv = levels[(levels["criterion"] == "magnitude") & (levels["round"] == 1)].iloc[0]
    assert lv["best_epoch_mean"] == pytest.approx(13 / 3) and lv["best_epoch_ci_high"] == BUDGET
    lv = levels[(levels["criterion"] == "magnitude") & (levels["round"] == 2)].iloc[0]
    assert lv["best_epoch_ci_low"] == 1.0
    ax = figures["early_stop_vs_weights"].axes[0]
    bands = [c for c in ax.collections if str(c.get_gid()).startswith("band:")]
    assert bands
    for band in bands:
        y = band.get_paths()[0].vertices[:, 1]
        assert y.max() <= BUDGET + 1e-9 and y.min() >= 1 - 1e-9
    budget = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith("training budget")]
    assert len(budget) == 1 and np.allclose(budget[0].get_ydata(), BUDGET)
    assert len(trial_lines(ax)) == 6
    # the means sit on the grid too: stability's skipped rounds do not pull it off the levels
    lines = mean_lines(ax)
    assert np.allclose(lines["stability"].get_xdata(), GRID[:4])
    # seed 1 is at 80% in rounds 1 and 2 (epochs 5 and 1: averaged), seed 2 in rounds 1-3
    expected_80 = np.mean([5, (5 + 1) / 2, (3 + 3 + 2) / 3])
    assert lines["stability"].get_ydata()[1] == pytest.approx(expected_80)


def test_differences_are_drawn_on_the_comparisons_grid_with_each_seed(trials):
    analysis = analyse(trials)
    figs = comparison_figures(analysis.levels, analysis.seeds)
    ax = figs["diff_criteria"].axes[0]
    rows = analysis.levels[analysis.levels["kind"] == "criterion"]
    (line,) = mean_lines(ax).values()
    assert np.allclose(sorted(line.get_xdata()), sorted(rows["weights_remaining_pct"]))
    assert set(np.round(line.get_xdata(), 6)) <= set(np.round(GRID, 6))
    assert np.allclose(line.get_ydata(), rows.sort_values("round")["mean_diff_pp"])
    seeds = {
        ln.get_label(): ln for ln in ax.get_lines() if str(ln.get_label()).startswith("_seed:")
    }
    assert len(seeds) == 3
    d = analysis.seeds[(analysis.seeds["kind"] == "criterion") & (analysis.seeds["seed"] == 0)]
    s0 = seeds["_seed:magnitude - stability:0"]
    assert np.allclose(s0.get_ydata(), d.sort_values("round")["diff_pp"])
    # magnitude - stability = -0.5 pp wherever both seeds pruned alike
    assert np.allclose(d["diff_pp"], -0.5)
    # the axis holds every difference; a band cut by it is marked at the edge
    bottom, top = ax.get_ylim()
    crit = analysis.seeds[analysis.seeds["kind"] == "criterion"]
    values = [*crit["diff_pp"], *rows["mean_diff_pp"]]
    assert bottom <= min(values) and max(values) <= top
    cut = {
        round(float(x), 6)
        for c in ax.collections
        if str(c.get_gid()).startswith("cut:")
        for x in c.get_offsets()[:, 0]
    }
    past = rows[(rows["ci_adj_high_pp"] > top) | (rows["ci_adj_low_pp"] < bottom)]
    assert cut == {round(float(x), 6) for x in past["weights_remaining_pct"]}


def test_a_band_far_wider_than_the_differences_is_cut_and_marked():
    """Two seeds under Bonferroni give bands of tens of points: the axis follows the differences."""
    wr = [80.0, 64.0, 51.2]
    half = [1.0, 30.0, 1.0]  # the middle level: two seeds, a huge simultaneous interval
    rows = pd.DataFrame(
        {
            "kind": "criterion",
            "a": "magnitude",
            "b": "stability",
            "comparison": "magnitude - stability",
            "round": [1, 2, 3],
            "weights_remaining_pct": wr,
            "mean_diff_pp": [0.5, 0.8, 0.6],
            "ci_adj_low_pp": [0.5 - h for h in half],
            "ci_adj_high_pp": [0.5 + h for h in half],
            "call": "inconclusive",
        }
    )
    seeds = pd.DataFrame(
        [
            {**rows.iloc[i][["kind", "a", "b", "comparison"]].to_dict(), "seed": s,
             "round": i + 1, "weights_remaining_pct": wr[i], "diff_pp": d}
            for i in range(3)
            for s, d in enumerate((0.0, 1.2))
        ]
    )  # fmt: skip
    ax = comparison_figures(rows, seeds)["diff_criteria"].axes[0]
    bottom, top = ax.get_ylim()
    assert bottom <= 0.0 and 1.2 <= top < 0.8 + 30.0  # the differences fit, the wide band does not
    assert top - bottom < 60.0 / 4  # not stretched to the 60 points of the wide band
    cut = [c for c in ax.collections if str(c.get_gid()).startswith("cut:")]
    marked = sorted(float(x) for c in cut for x in c.get_offsets()[:, 0])
    assert marked == [64.0, 64.0]  # above and below
    legend = [t.get_text() for t in ax.figure.legends[0].get_texts()]
    assert "band continues\nbeyond the axis" in legend and "one seed's difference" in legend
