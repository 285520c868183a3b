"""The report end to end: an MLflow sqlite store filled with runs of known values -> tables with the
expected means, t-intervals, "matches dense" and chance-collapse levels, and figures whose plotted
series and labels are read back from the matplotlib objects."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lth_ray.report import ReportError, build_report, main
from lth_ray.report.mlflow_io import find_sweep, load_sweep, open_client
from lth_ray.report.plots import FigureBuilder
from lth_ray.report.stats import level_stats
from tests.test_report_synth import Trial, log_sweep, store_uri, weights_remaining

T_975_DF2 = 4.302652729911275  # Student t quantile, 0.975, 2 degrees of freedom (tables)
HALF = T_975_DF2 * 1.0 / math.sqrt(3)  # seeds at mean -1, 0, +1 points: s = 1 point, n = 3
ROUNDS = 6
WR = weights_remaining(0.2, ROUNDS)  # 100, 80, 64, 51.2, 40.96, 32.768
# Mean test accuracy per round (fraction); seeds 0, 1, 2 sit at -0.01, 0, +0.01 around it.
BASE = {
    ("magnitude", "iterative", "none"): [0.75, 0.76, 0.77, 0.74, 0.60, 0.12],
    # round 1 misses dense, round 3 matches again: the consecutive rule must report "none"
    ("stability", "iterative", "none"): [0.75, 0.70, 0.74, 0.76, 0.50, 0.16],
    ("magnitude", "one_shot", "none"): [0.75, 0.74, 0.72, 0.65, 0.40, 0.10],
    ("magnitude", "iterative", "reinit"): [0.75, 0.70, 0.62, 0.50, 0.30, 0.11],
}
EPOCHS = {"magnitude": [6, 5, 4, 4, 7, 9], "stability": [6, 6, 5, 5, 8, 10]}
OFFSETS = {0: -0.01, 1: 0.0, 2: 0.01}
# Incomplete trials with values that would visibly move every mean if they were averaged in.
INCOMPLETE = [
    Trial("stability", 3, [0.2, 0.2, 0.2], status="RUNNING", rounds_total=ROUNDS),
    Trial("magnitude", 3, [0.2, 0.2], status="FAILED", rounds_total=ROUNDS),
    Trial("stability", 4, [0.2] * 4, status="FINISHED", rounds_total=ROUNDS),  # short
    Trial("magnitude", 5, [], status="RUNNING", rounds_total=ROUNDS),  # no round yet
]


def design() -> list[Trial]:
    trials = []
    for (crit, schedule, control), accs in BASE.items():
        for seed, d in OFFSETS.items():
            epochs = [e + (seed - 1) for e in EPOCHS[crit]]
            trials.append(
                Trial(crit, seed, [a + d for a in accs], epochs, schedule=schedule, control=control)
            )
    return trials + INCOMPLETE


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    uri = store_uri(folder)
    log_sweep(uri, "older-ablation", "sw0", design()[:3], start_time=500)
    log_sweep(uri, "abl", "sw1", design(), start_time=1_000)
    return uri


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    return build_report(store, out_dir=tmp_path_factory.mktemp("out"))


def _group(df: pd.DataFrame, crit="magnitude", schedule="iterative", control="none"):
    return df[(df["criterion"] == crit) & (df["schedule"] == schedule) & (df["control"] == control)]


# ------------------------------------------------------------------------------------------------
# Tables.


def test_defaults_pick_the_newest_sweep(report):
    assert set(report.trials["sweep"]) == {"sw1"}
    assert set(report.trials["experiment"]) == {"abl"}
    assert report.out_dir.is_dir()


def test_trials_table_is_tidy_and_keeps_incomplete_rows(report):
    t = report.trials
    required = ["sweep", "trial", "criterion", "seed", "prune_rate", "schedule", "control", "control_index",
                "round", "sparsity", "weights_remaining", "test_acc", "test_loss", "best_epoch",
                "val_loss_best", "skipped", "status"]  # fmt: skip
    assert list(t.columns[: len(required)]) == required
    assert len(t) == 12 * ROUNDS + 3 + 2 + 4 + 1
    status = t.drop_duplicates("trial").set_index("trial")["status"]
    assert (status == "incomplete").sum() == 4
    assert status["stability-s4-p0.2-iterative-none"] == "incomplete"  # FINISHED but short
    row = t[(t["trial"] == "magnitude-s0-p0.2-iterative-none") & (t["round"] == 2)].iloc[0]
    assert row["test_acc"] == pytest.approx(0.76)  # MLflow units: a fraction
    assert row["weights_remaining"] == pytest.approx(64.0)
    assert row["sparsity"] == pytest.approx(0.36)
    assert row["best_epoch"] == 3 and row["status"] == "complete"
    empty = t[t["trial"] == "magnitude-s5-p0.2-iterative-none"]
    assert len(empty) == 1 and pd.isna(empty["round"].iloc[0])
    assert empty["run_status"].iloc[0] == "RUNNING"


def test_levels_are_means_and_t_intervals_over_complete_seeds(report):
    lv = _group(report.levels, "stability").set_index("round")
    assert list(lv["n"]) == [3] * ROUNDS  # the incomplete seeds 3 and 4 are not averaged in
    assert np.allclose(
        lv["acc_mean_pct"], [a * 100 for a in BASE["stability", "iterative", "none"]]
    )
    assert np.allclose(lv["acc_ci_high_pct"] - lv["acc_mean_pct"], HALF)
    assert np.allclose(lv["acc_mean_pct"] - lv["acc_ci_low_pct"], HALF)
    assert np.allclose(lv["weights_remaining_pct"], WR)
    assert np.allclose(lv["best_epoch_mean"], EPOCHS["stability"])
    assert np.allclose(lv["best_epoch_ci_high"] - lv["best_epoch_mean"], HALF / 1.0)  # s = 1 epoch


def test_summary_numbers(report):
    s = report.summary.set_index(["criterion", "schedule", "control"])
    mag = s.loc["magnitude", "iterative", "none"]
    assert mag["n_seeds"] == 3 and mag["n_incomplete"] == 2
    assert mag["dense_acc_mean_pct"] == pytest.approx(75.0)
    assert mag["dense_acc_ci_low_pct"] == pytest.approx(75.0 - HALF)
    assert mag["dense_acc_ci_high_pct"] == pytest.approx(75.0 + HALF)
    # paired (every seed keeps its offset): level - dense = +1, +2, -1, -15 pp with no spread;
    # round 3 sits at -1 pp, not above the margin -1 pp: matches down to round 2 = 64% left
    assert mag["matches_dense_margin_pp"] == 1.0
    assert mag["matches_dense_round"] == 2
    assert mag["matches_dense_weights_remaining_pct"] == pytest.approx(64.0)
    assert mag["matches_dense_sparsity_pct"] == pytest.approx(36.0)
    assert mag["best_gain_pp"] == pytest.approx(2.0)
    assert mag["best_gain_weights_remaining_pct"] == pytest.approx(64.0)
    # chance 10% + 5 points: 12% at round 5 is the first level below 15%
    assert mag["chance_collapse_round"] == 5
    assert mag["chance_collapse_weights_remaining_pct"] == pytest.approx(WR[5])
    assert mag["early_stop_epoch_min"] == pytest.approx(4.0)
    assert mag["early_stop_epoch_by_level"].startswith("100%: 6.0; 80%: 5.0; 64%: 4.0")

    stab = s.loc["stability", "iterative", "none"]
    assert math.isnan(stab["matches_dense_round"])  # round 1 (70%) breaks the run
    assert stab["best_gain_pp"] == pytest.approx(1.0)
    assert stab["best_gain_round"] == 3
    assert math.isnan(stab["chance_collapse_round"])  # 16% >= 15%
    one_shot = s.loc["magnitude", "one_shot", "none"]
    # one-shot round 1 is -1 pp on every seed: not above -1 pp, so no level matches (the old
    # unpaired rule, mean >= dense CI low, called it a match)
    assert math.isnan(one_shot["matches_dense_round"]) and one_shot["chance_collapse_round"] == 5
    reinit = s.loc["magnitude", "iterative", "reinit"]
    assert math.isnan(reinit["matches_dense_round"])
    assert reinit["best_gain_pp"] == pytest.approx(-5.0)


def test_files_and_markdown(report):
    names = {p.name for p in report.files}
    for stem in ("accuracy_vs_weights", "early_stop_vs_weights", "iterative_vs_oneshot",
                 "ticket_vs_controls"):  # fmt: skip
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert {"trials.csv", "trials.parquet", "summary.csv", "summary.md", "levels.csv"} <= names
    assert "accuracy_by_prune_rate.png" not in names  # one prune rate: nothing to facet
    assert all(p.is_file() and p.stat().st_size > 0 for p in report.files)
    back = pd.read_parquet(report.out_dir / "trials.parquet")
    assert len(back) == len(report.trials) and list(back.columns) == list(report.trials.columns)
    csv = pd.read_csv(report.out_dir / "summary.csv")
    assert csv["matches_dense_weights_remaining_pct"].iloc[0] == pytest.approx(64.0)
    md = (report.out_dir / "summary.md").read_text()
    assert "| magnitude | 20% | iterative | none | 3 (+2 incomplete) | 75.0 [72.5, 77.5] |" in md
    assert "64% (round 2)" in md and "+2.0 pp [+2.0, +2.0] at 64%" in md
    for trial in INCOMPLETE:
        assert trial.key in md
    assert "| FAILED | 2 / 6 |" in md and "| RUNNING | 0 / 6 |" in md
    assert "t(0.975, n−1)" in md
    assert any("4 incomplete trial(s)" in w for w in report.warnings)


# ------------------------------------------------------------------------------------------------
# Figures, read back from the matplotlib objects.


def _series(ax) -> dict[str, object]:
    return {line.get_gid().split(":", 1)[1]: line for line in ax.lines if line.get_gid()}


def _bands(ax) -> dict[str, np.ndarray]:
    out = {}
    for c in ax.collections:
        if str(c.get_gid()).startswith("band:"):
            out[c.get_gid().split(":", 1)[1]] = c.get_paths()[0].vertices
    return out


def _band_at(vertices: np.ndarray, x: float) -> tuple[float, float]:
    ys = vertices[np.isclose(vertices[:, 0], x), 1]
    return ys.min(), ys.max()


def test_accuracy_figure_content(report):
    fig = report.figures["accuracy_vs_weights"]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 1
    ax = axes[0]
    assert "Test accuracy vs weights remaining" in fig._suptitle.get_text()
    assert (
        "sw1" in fig._suptitle.get_text()
        and "95% t-interval across n=3 seeds" in fig._suptitle.get_text()
    )
    assert ax.get_ylabel() == "Test accuracy (%)"
    assert ax.get_xlabel() == "Weights remaining (%, log scale)"
    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > 100 > WR[-1] > right  # reversed: dense on the left
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "80", "64", "51.2", "41", "32.8"]

    lines = _series(ax)
    assert set(lines) == {"magnitude", "stability"}  # main comparison: iterative, no control
    for crit, line in lines.items():
        assert line.get_label() == crit
        assert np.allclose(line.get_xdata(), WR)
        assert np.allclose(line.get_ydata(), [a * 100 for a in BASE[crit, "iterative", "none"]])
    bands = _bands(ax)
    assert set(bands) == {"magnitude", "stability"}
    low, high = _band_at(bands["magnitude"], 64.0)
    assert (low, high) == pytest.approx((77.0 - HALF, 77.0 + HALF))

    dense = [p for p in ax.patches if p.get_label() == "dense (round 0): 95% CI"]
    assert len(dense) == 1
    band = dense[0]  # a Rectangle across the axes, y in data units
    span = (band.get_y(), band.get_y() + band.get_height())
    assert span == pytest.approx((75.0 - HALF, 75.0 + HALF))
    chance = [ln for ln in ax.lines if ln.get_label().startswith("chance")]
    assert len(chance) == 1 and np.allclose(chance[0].get_ydata(), 10.0)

    marks = {
        c.get_gid(): c.get_offsets()
        for c in ax.collections
        if str(c.get_gid()).startswith("incomplete:")
    }
    assert sorted(map(tuple, np.round(marks["incomplete:magnitude"], 6))) == [
        (80.0, 20.0),
        (100.0, 20.0),
    ]
    assert len(marks["incomplete:stability"]) == 3 + 4
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["magnitude", "stability"]
    assert "chance (10%)" in legend and any(t.startswith("incomplete trial") for t in legend)


def test_early_stop_and_comparison_figures(report):
    ax = report.figures["early_stop_vs_weights"].axes[0]
    assert "Early-stop epoch" in ax.get_ylabel()
    for crit, line in _series(ax).items():
        assert np.allclose(line.get_ydata(), EPOCHS[crit])

    ax = report.figures["iterative_vs_oneshot"].axes[0]
    assert ax.get_title() == "magnitude"
    lines = _series(ax)
    assert set(lines) == {"iterative", "one_shot"}
    assert lines["one_shot"].get_label() == "one-shot"
    assert lines["one_shot"].get_linestyle() != lines["iterative"].get_linestyle()
    assert np.allclose(
        lines["one_shot"].get_ydata(), [a * 100 for a in BASE["magnitude", "one_shot", "none"]]
    )

    ax = report.figures["ticket_vs_controls"].axes[0]
    lines = _series(ax)
    assert set(lines) == {"none", "reinit"}
    assert "random reinit" in lines["reinit"].get_label()
    assert np.allclose(
        lines["reinit"].get_ydata(), [a * 100 for a in BASE["magnitude", "iterative", "reinit"]]
    )


# ------------------------------------------------------------------------------------------------
# One seed, several prune rates, the CLI, errors.


@pytest.fixture(scope="module")
def single_seed_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    uri = store_uri(folder)
    trials = [
        Trial(c, 0, [0.75, 0.751, 0.749, 0.5], prune_rate=r)
        for c in ("magnitude", "stability")
        for r in (0.1, 0.2)
    ]
    log_sweep(uri, "one-seed", "sw-one", trials)
    return uri


def test_cli_single_seed_lines_without_bands(single_seed_store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", single_seed_store)
    assert main([]) == 0
    out = tmp_path / "reports" / "sw-one"
    assert (out / "summary.md").is_file() and (out / "accuracy_by_prune_rate.png").is_file()
    err = capsys.readouterr().err
    assert "only 1 complete seed: lines without confidence bands" in err
    s = pd.read_csv(out / "summary.csv")
    assert len(s) == 4 and (s["n_seeds"] == 1).all()
    assert s["dense_acc_ci_low_pct"].isna().all()
    # one seed gives no paired interval: "matches dense" cannot be shown (the old rule, mean >=
    # dense mean, called 75.1 a match: the fewer the seeds, the more lenient it was)
    assert s["matches_dense_round"].isna().all()


def test_single_seed_figures_have_no_bands_and_facet_by_rate(single_seed_store):
    data = load_sweep(single_seed_store)
    figs = FigureBuilder(data.trials, level_stats(data.trials), data.ref.sweep_id).all()
    axes = [ax for ax in figs["accuracy_vs_weights"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [
        "prune rate 10% per round",
        "prune rate 20% per round",
    ]
    assert axes[0].get_xlim() == pytest.approx(axes[1].get_xlim())  # one x range per figure
    for ax in axes:
        assert set(_series(ax)) == {"magnitude", "stability"} and _bands(ax) == {}
        assert not any(p.get_label() == "dense (round 0): 95% CI" for p in ax.patches)
    assert np.allclose(_series(axes[0])["magnitude"].get_xdata(), weights_remaining(0.1, 4))
    by_rate = figs["accuracy_by_prune_rate"]
    assert [ax.get_title() for ax in by_rate.axes if ax.get_visible()] == ["magnitude", "stability"]
    assert [ln.get_label() for ln in by_rate.axes[0].lines if ln.get_gid()] == [
        "10% per round",
        "20% per round",
    ]
    assert "1 seed: no bands" in figs["accuracy_vs_weights"]._suptitle.get_text()


def test_explicit_sweep_and_experiment(store):
    client = open_client(store)
    assert find_sweep(client, None, "sw0").experiment_name == "older-ablation"
    assert find_sweep(client, "older-ablation", None).sweep_id == "sw0"
    assert find_sweep(client, "abl", None).sweep_id == "sw1"


@pytest.fixture(scope="module")
def error_store(store):
    """The main store plus an experiment without runs and a sweep without trials."""
    open_client(store).create_experiment("empty")
    log_sweep(store, "bare", "sw-bare", [])
    return store


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"experiment": "nope"}, "'nope' not found; experiments with sweeps: abl, bare, older-"),
        ({"experiment": "empty"}, "no sweep runs"),
        ({"sweep": "sw-missing"}, "sweep 'sw-missing' not found"),
        ({"experiment": "abl", "sweep": "sw0"}, "sweep 'sw0' not found in experiment 'abl'"),
        ({"experiment": "bare", "sweep": "sw-bare"}, "has no trial runs"),
    ],
)
def test_clear_errors(error_store, kwargs, message):
    with pytest.raises(ReportError, match=message.replace("(", r"\(")):
        build_report(error_store, **kwargs)


def test_cli_errors_are_one_line(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["--tracking-uri", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lth_ray.report: error: no MLflow store at") and "\n" not in err
    assert not (tmp_path / "none.db").exists()  # no stray store created


def test_mid_sweep_with_only_incomplete_trials(tmp_path):
    """A report taken while everything still runs: no statistics, points marked, no crash."""
    uri = store_uri(tmp_path)
    running = [
        Trial("magnitude", 0, [0.75, 0.70], status="RUNNING", rounds_total=ROUNDS),
        Trial("stability", 0, [], status="RUNNING", rounds_total=ROUNDS),
    ]
    log_sweep(uri, "mid", "sw-mid", running)
    report = build_report(uri, out_dir=tmp_path / "out")
    assert list(report.summary["n_seeds"]) == [0, 0]
    assert list(report.summary["n_incomplete"]) == [1, 1]
    assert report.summary["dense_acc_mean_pct"].isna().all() and report.levels.empty
    assert any("2 group(s) with no complete trial yet" in w for w in report.warnings)
    fig = report.figures["accuracy_vs_weights"]
    ax = fig.axes[0]
    assert _series(ax) == {} and "no complete trial yet" in fig._suptitle.get_text()
    (marks,) = [c for c in ax.collections if c.get_gid() == "incomplete:magnitude"]
    assert sorted(map(tuple, np.round(marks.get_offsets(), 6))) == [(80.0, 70.0), (100.0, 75.0)]
    assert marks.get_label() == "magnitude"  # no line names the colour: the markers do
    md = (report.out_dir / "summary.md").read_text()
    assert "| magnitude | 20% | iterative | none | 0 (+1 incomplete) | – |" in md


def test_a_study_run_in_parts_is_reported_as_one(tmp_path):
    """Seeds 0-1 in one sweep, seed 2 in another: --sweep A --sweep B (or every sweep of the
    experiment) gives the same statistics as one sweep with all three, and a sweep column."""
    uri = store_uri(tmp_path)
    trials = [t for t in design() if t.status == "FINISHED" and t.rounds_total is None]
    log_sweep(uri, "parts", "partA", [t for t in trials if t.seed in (0, 1)], start_time=100)
    log_sweep(uri, "parts", "partB", [t for t in trials if t.seed == 2], start_time=200)
    log_sweep(uri, "whole", "all", trials, start_time=300)
    both = build_report(uri, "parts", ["partA", "partB"], tmp_path / "ab", masks=False)
    every = build_report(uri, "parts", out_dir=tmp_path / "every", every_sweep=True, masks=False)
    whole = build_report(uri, "whole", "all", tmp_path / "whole", masks=False)
    assert set(both.trials["sweep"]) == {"partA", "partB"}
    cols = ["criterion", "schedule", "control", "round", "n", "acc_mean_pct", "acc_ci_low_pct"]
    for r in (both, every):
        pd.testing.assert_frame_equal(
            r.levels[cols].reset_index(drop=True), whole.levels[cols].reset_index(drop=True)
        )
    assert (both.out_dir / "comparisons.csv").is_file()
    assert "## Verdict" in (both.out_dir / "summary.md").read_text()
