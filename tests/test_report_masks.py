"""Mask profiles and overlaps on hand-made masks with known answers (no MLflow, no training)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from lth_ray.report.masks import (
    ALL_LAYERS,
    jaccard,
    layer_styles,
    mask_overlap_figure,
    mask_profile_figure,
    mask_report,
    overlap_columns,
    profile_columns,
    random_jaccard,
)

matplotlib.use("Agg")

LAYERS = {"fc1": 12, "fc2": 6, "out": 4}  # "out" is excluded from pruning: always all True


def mask(n: int, kept) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[list(kept)] = True
    return m


def dense() -> dict[str, torch.Tensor]:
    return {k: torch.ones(n, dtype=torch.bool) for k, n in LAYERS.items()}


def level(fc1, fc2=None) -> dict[str, torch.Tensor]:
    """Masks of one round: the kept indices of fc1 (and fc2: all kept when None)."""
    out = dense()
    out["fc1"] = mask(LAYERS["fc1"], fc1)
    if fc2 is not None:
        out["fc2"] = mask(LAYERS["fc2"], fc2)
    return out


@dataclass
class Trial:
    criterion: str
    seed: int
    rounds: list[dict[str, torch.Tensor] | None]  # masks per round; None: no artifact
    schedule: str = "iterative"
    control: str = "none"
    control_index: int = 0
    status: str = "complete"
    axes: dict[str, str] = field(default_factory=dict)
    weights: list[float] | None = None  # weights_remaining per round; default: from the masks

    @property
    def run_id(self) -> str:
        extra = "".join(f"-{k}={v}" for k, v in self.axes.items())
        return f"{self.criterion}-s{self.seed}-{self.schedule}-{self.control}{self.control_index}{extra}"


def prunable_pct(masks: dict[str, torch.Tensor] | None) -> float:
    if masks is None:
        return math.nan
    kept = sum(int(masks[k].sum()) for k in ("fc1", "fc2"))
    return 100.0 * kept / (LAYERS["fc1"] + LAYERS["fc2"])


class Loader:
    """load_masks for the report: counts its calls so that repeated loads show up."""

    def __init__(self, trials: list[Trial]) -> None:
        self.masks = {(t.run_id, r): m for t in trials for r, m in enumerate(t.rounds)}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, run_id: str, r: int):
        self.calls.append((run_id, r))
        return self.masks.get((run_id, r))


def table(trials: list[Trial]) -> pd.DataFrame:
    rows = []
    for t in trials:
        weights = t.weights or [prunable_pct(m) for m in t.rounds]
        for r, wr in enumerate(weights):
            rows.append(
                {
                    "sweep": "sw",
                    "trial": t.run_id,
                    "run_id": t.run_id,
                    "criterion": t.criterion,
                    "seed": t.seed,
                    "prune_rate": 0.5,
                    "schedule": t.schedule,
                    "control": t.control,
                    **t.axes,
                    "control_index": t.control_index,
                    "round": r,
                    "weights_remaining": wr,
                    "status": t.status,
                }
            )
    out = pd.DataFrame(rows)
    return out.astype({"round": "Int64", "seed": "Int64"})


def report(trials: list[Trial], **kw):
    loader = Loader(trials)
    return mask_report(table(trials), loader, **kw), loader


def row(frame: pd.DataFrame, **eq) -> pd.Series:
    for k, v in eq.items():
        frame = frame[frame[k] == v]
    assert len(frame) == 1, frame
    return frame.iloc[0]


def series_gids(fig, prefix: str) -> list[str]:
    return [
        str(line.get_gid())
        for ax in fig.axes
        for line in ax.get_lines()
        if str(line.get_gid()).startswith(prefix)
    ]


# ------------------------------------------------------------------------------------------------
# Jaccard and its chance reference.


def test_jaccard_by_hand():
    assert jaccard(mask(6, [0, 1, 2]), mask(6, [1, 2, 3])) == pytest.approx(2 / 4)
    assert jaccard(mask(6, [0, 1]), mask(6, [0, 1])) == 1.0
    assert jaccard(mask(6, [0, 1]), mask(6, [2, 3])) == 0.0
    assert math.isnan(jaccard(mask(6, []), mask(6, [])))
    assert random_jaccard(0.5, 0.5) == pytest.approx(0.25 / 0.75)
    assert random_jaccard(1.0, 0.3) == pytest.approx(0.3)
    assert math.isnan(random_jaccard(0.0, 0.0))


@pytest.mark.parametrize("d1, d2", [(0.3, 0.6), (0.05, 0.2), (0.5, 0.5)])
def test_random_expectation_matches_monte_carlo(d1, d2):
    gen = torch.Generator().manual_seed(0)
    n, draws = 4000, 200
    k1, k2 = round(d1 * n), round(d2 * n)
    values = []
    for _ in range(draws):
        a = mask(n, torch.randperm(n, generator=gen)[:k1].tolist())
        b = mask(n, torch.randperm(n, generator=gen)[:k2].tolist())
        values.append(jaccard(a, b))
    assert np.mean(values) == pytest.approx(random_jaccard(d1, d2), rel=0.03, abs=0.003)


# ------------------------------------------------------------------------------------------------
# Overlap and profiles on masks with known answers.


def test_identical_disjoint_and_partial_overlaps():
    trials = [
        # same seed: A and B identical; A and C disjoint in fc1; A and D share {1, 2} of {0..3}
        Trial("A", 0, [dense(), level([0, 1, 2])]),
        Trial("B", 0, [dense(), level([0, 1, 2])]),
        Trial("C", 0, [dense(), level([3, 4, 5])]),
        Trial("D", 0, [dense(), level([1, 2, 3])]),
    ]
    rep, _ = report(trials)
    ov = rep.overlap
    assert list(ov.columns) == overlap_columns(table(trials))
    crit = ov[(ov["kind"] == "criteria") & (ov["round"] == 1)]
    assert set(crit["layer"]) == {ALL_LAYERS, "fc1"}  # fc2 and out never lose a weight
    for b, expected in (("B", 1.0), ("C", 0.0), ("D", 0.5)):
        for layer in (ALL_LAYERS, "fc1"):  # "all" pools fc1 only: the one prunable layer
            r = row(crit, a="A", b=b, layer=layer)
            assert r["jaccard_mean"] == pytest.approx(expected)
            assert r["n_pairs"] == 1
            assert math.isnan(r["jaccard_sd"])
            assert r["random_expected"] == pytest.approx(random_jaccard(3 / 12, 3 / 12))
    assert row(crit, a="C", b="D", layer="fc1")["jaccard_mean"] == pytest.approx(1 / 5)
    assert len(crit) == 2 * math.comb(4, 2)  # every pair of criteria, "all" and fc1
    dense_rows = ov[ov["round"] == 0]
    assert (dense_rows["jaccard_mean"] == 1.0).all() and (dense_rows["random_expected"] == 1).all()
    assert (ov["kind"] == "criteria").all()  # one seed per criterion: no seed pairs
    assert rep.warnings == []


def test_pooled_overlap_and_layer_matched_chance():
    # fc1 (12): {0..5} vs {3..8} -> 3/9; fc2 (6): {0, 1} vs {0, 1} -> 2/2; pooled 5/11
    trials = [
        Trial("A", 0, [dense(), level(range(0, 6), [0, 1])]),
        Trial("B", 0, [dense(), level(range(3, 9), [0, 1])]),
    ]
    rep, _ = report(trials)
    ov = rep.overlap[rep.overlap["round"] == 1]
    assert row(ov, layer="fc1")["jaccard_mean"] == pytest.approx(3 / 9)
    assert row(ov, layer="fc2")["jaccard_mean"] == pytest.approx(1.0)
    assert row(ov, layer=ALL_LAYERS)["jaccard_mean"] == pytest.approx(5 / 11)
    # chance keeps each layer's densities: E|AnB| = 6*6/12 + 2*2/6, E|AuB| = 12 - 3 + 4 - 2/3
    e_inter, e_union = 3 + 2 / 3, (6 + 6 - 3) + (2 + 2 - 2 / 3)
    assert row(ov, layer=ALL_LAYERS)["random_expected"] == pytest.approx(e_inter / e_union)
    assert row(ov, layer="fc2")["random_expected"] == pytest.approx(random_jaccard(1 / 3, 1 / 3))
    assert row(ov, layer=ALL_LAYERS)["weights_remaining_pct"] == pytest.approx(100 * 8 / 18)


def test_seed_pairs_mean_sd_and_emptied_layers():
    # criterion A, three seeds at round 1: fc1 kept {0,1,2}, {1,2,3}, {0,1,2} -> 0.5, 1, 0.5
    trials = [
        Trial("A", 0, [dense(), level([0, 1, 2], [])]),
        Trial("A", 1, [dense(), level([1, 2, 3], [])]),
        Trial("A", 2, [dense(), level([0, 1, 2], [])]),
    ]
    rep, _ = report(trials)
    ov = rep.overlap[rep.overlap["round"] == 1]
    r = row(ov, kind="seeds", layer="fc1")
    assert (r["a"], r["b"]) == ("A", "A")
    assert r["jaccard_mean"] == pytest.approx(2 / 3)
    assert r["jaccard_sd"] == pytest.approx(np.std([0.5, 1.0, 0.5], ddof=1))
    assert r["n_pairs"] == 3
    emptied = row(ov, kind="seeds", layer="fc2")  # every seed emptied fc2: undefined, not counted
    assert math.isnan(emptied["jaccard_mean"]) and emptied["n_pairs"] == 0
    assert math.isnan(emptied["random_expected"])
    assert row(ov, layer=ALL_LAYERS)["jaccard_mean"] == pytest.approx(2 / 3)  # fc2 adds nothing
    assert mask_overlap_figure(rep.overlap) is not None


def test_profiles_by_hand():
    trials = [
        Trial("A", 0, [dense(), level(range(6), [0, 1, 2]), level(range(3), [0])]),
        Trial("A", 1, [dense(), level(range(9), [0, 1, 2]), level(range(3), [0, 1])]),
        Trial("B", 0, [dense(), level(range(12), [0]), level(range(12), [])]),
    ]
    rep, _ = report(trials)
    prof = rep.profiles
    assert list(prof.columns) == profile_columns(table(trials))
    assert list(dict.fromkeys(prof["layer"])) == ["fc1", "fc2"]  # the excluded layer is left out
    r = row(prof, criterion="A", round=1, layer="fc1")
    assert r["kept_pct_mean"] == pytest.approx((50 + 75) / 2)
    assert r["kept_pct_sd"] == pytest.approx(np.std([50, 75], ddof=1))
    assert r["n"] == 2
    assert r["weights_remaining_pct"] == pytest.approx(100 * (9 / 18 + 12 / 18) / 2)
    assert row(prof, criterion="A", round=2, layer="fc2")["kept_pct_mean"] == pytest.approx(25)
    b = row(prof, criterion="B", round=2, layer="fc2")  # B empties fc2, keeps all of fc1
    assert b["kept_pct_mean"] == 0 and b["n"] == 1 and math.isnan(b["kept_pct_sd"])
    assert row(prof, criterion="B", round=2, layer="fc1")["kept_pct_mean"] == 100
    assert (prof[prof["round"] == 0]["kept_pct_mean"] == 100).all()
    assert list(prof["round"][:2]) == [0, 0]  # sorted: criterion, round, layer in forward order


# ------------------------------------------------------------------------------------------------
# What enters: complete ticket trials, each mask loaded once; missing masks warn.


def test_incomplete_trials_and_controls_are_ignored():
    ticket = [
        Trial("A", 0, [dense(), level([0, 1, 2])]),
        Trial("B", 0, [dense(), level([1, 2, 3])]),
    ]
    others = [
        Trial("B", 0, [dense(), level([7])], control="reinit"),
        Trial("B", 0, [dense(), level([8])], control="random_mask", control_index=1),
        Trial("A", 1, [dense(), level([9])], status="incomplete"),
        Trial("B", 1, [dense(), level([9])], status="incomplete"),
    ]
    rep, loader = report(ticket + others)
    alone, _ = report(ticket)
    pd.testing.assert_frame_equal(rep.overlap, alone.overlap)
    pd.testing.assert_frame_equal(rep.profiles, alone.profiles)
    assert {run for run, _ in loader.calls} == {t.run_id for t in ticket}
    assert sorted(loader.calls) == sorted(set(loader.calls))  # each (run, round) loaded once
    assert len(loader.calls) == 4


def test_missing_and_unreadable_masks_warn():
    trials = [
        Trial("A", 0, [dense(), level([0, 1, 2]), level([0])]),
        Trial("B", 0, [dense(), None, level([0, 1])]),
    ]
    loader = Loader(trials)
    broken = ("A-s0-iterative-none0", 2)

    def load(run_id, r):
        if (run_id, r) == broken:
            raise EOFError("truncated file")
        return loader(run_id, r)

    t = table(trials)
    t.loc[t["run_id"].str.startswith("B") & (t["round"] == 1), "weights_remaining"] = 50.0
    rep = mask_report(t, load)
    assert any("2 of 6 mask(s) missing" in w for w in rep.warnings), rep.warnings
    assert any("EOFError: truncated file" in w for w in rep.warnings), rep.warnings
    assert set(rep.overlap["round"]) == {0}  # round 1 lacks B's masks, round 2 lacks A's
    assert set(rep.profiles[rep.profiles["criterion"] == "B"]["round"]) == {0, 2}
    assert "mask_profile" in rep.figures


def test_missing_weights_remaining_falls_back_to_the_masks():
    trials = [Trial("A", 0, [dense(), level(range(6))], weights=[100.0, math.nan])]
    rep, _ = report(trials)
    r = row(rep.profiles, round=1, layer="fc1")
    assert r["weights_remaining_pct"] == pytest.approx(100 * 6 / 12)  # fc1 is the prunable layer


def test_caps_on_trials_and_rounds():
    levels = [dense()] + [level(range(12 - r)) for r in range(1, 6)]
    trials = [Trial(c, s, levels) for c in "ABC" for s in (0, 1)]
    rep, loader = report(trials, max_trials=4, max_rounds=3)
    assert len({run for run, _ in loader.calls}) == 4
    loaded = sorted({r for _, r in loader.calls})
    assert len(loaded) == 3 and loaded[0] == 0 and loaded[-1] == 5  # dense and sparsest kept
    assert sorted(set(rep.profiles["criterion"])) == ["A", "B"]
    assert any("first 4" in w for w in rep.warnings) and any("3 evenly" in w for w in rep.warnings)


def test_nothing_to_report():
    rep, loader = report([Trial("A", 0, [dense(), level(range(6))], status="incomplete")])
    assert rep.profiles.empty and rep.overlap.empty and rep.figures == {}
    assert loader.calls == [] and any("no complete ticket" in w for w in rep.warnings)


# ------------------------------------------------------------------------------------------------
# Settings: one-shot arm and extra grid axes stay apart; figures.


def test_schedules_and_extra_axes_are_separate_settings():
    trials = [
        Trial(c, 0, [dense(), level(kept)], schedule=sched, axes={"prune.rewind": rw})
        for c, kept in (("A", [0, 1, 2]), ("B", [1, 2, 3]))
        for sched in ("iterative", "one_shot")
        for rw in ("init", "1ep")
    ]
    rep, _ = report(trials)
    crit = rep.overlap[(rep.overlap["layer"] == ALL_LAYERS) & (rep.overlap["round"] == 1)]
    assert "prune.rewind" in crit.columns
    assert len(crit) == 4 and (crit["n_pairs"] == 1).all()  # A vs B in each of 2 x 2 settings
    assert (crit["jaccard_mean"] == 0.5).all()
    assert (
        rep.profiles.groupby(["schedule", "prune.rewind", "round", "layer"])["n"].sum() == 2
    ).all()
    fig = rep.figures["mask_overlap"]
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    assert len(series_gids(fig, "series:")) == 4
    assert len(rep.figures["mask_profile"].axes) == 4 * 2  # settings x criteria


def _correlated(criterion: str, seed: int, rounds: int = 4) -> Trial:
    """Masks from scores that share a per-seed part across criteria: more overlap than chance."""
    base = torch.Generator().manual_seed(seed)
    own = torch.Generator().manual_seed(1000 * seed + ord(criterion[0]))
    keep_rate = {"magnitude": (0.5, 0.8), "snip": (0.7, 0.6), "random": (0.6, 0.6)}[criterion]
    scores = {k: torch.rand(n, generator=base) for k, n in LAYERS.items()}
    if criterion == "random":
        scores = {k: torch.rand(n, generator=own) for k, n in LAYERS.items()}
    else:
        scores = {k: v + 0.5 * torch.rand(v.numel(), generator=own) for k, v in scores.items()}
    masks = []
    for r in range(rounds):
        out = dense()
        for layer, rate in zip(("fc1", "fc2"), keep_rate):
            k = max(1, round(LAYERS[layer] * rate**r))
            out[layer] = mask(LAYERS[layer], scores[layer].topk(k).indices.tolist())
        masks.append(out)
    return Trial(criterion, seed, masks)


def test_figures_have_one_line_per_series():
    criteria = ["magnitude", "random", "snip"]
    trials = [_correlated(c, s) for c in criteria for s in (0, 1, 2)]
    rep, _ = report(trials)
    prof = rep.figures["mask_profile"]
    assert len(prof.axes) == 3
    for ax, criterion in zip(prof.axes, criteria):
        assert ax.get_title() == criterion
        layers = sorted(str(line.get_label()) for line in ax.get_lines() if line.get_gid())
        assert layers == ["fc1", "fc2", "whole network\n(uniform pruning)"]
        assert ax.get_xlim()[0] > ax.get_xlim()[1]  # dense on the left
    fig = rep.figures["mask_overlap"]
    pairs = [f"series:criteria:{a}|{b}" for a, b in itertools.combinations(criteria, 2)]
    seeds = [f"series:seeds:{c}" for c in criteria]
    assert sorted(series_gids(fig, "series:")) == sorted(pairs + seeds)
    assert len(series_gids(fig, "random:")) == len(pairs) + len(seeds)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "magnitude vs snip (same seed)" in labels and "snip: seed vs seed" in labels
    ax = fig.axes[0]
    assert ax.get_xlim()[0] > ax.get_xlim()[1] and "Jaccard" in ax.get_ylabel()
    ov = rep.overlap[(rep.overlap["layer"] == ALL_LAYERS) & (rep.overlap["round"] == 3)]
    shared = row(ov, kind="criteria", a="magnitude", b="snip")
    assert shared["n_pairs"] == 3 and shared["jaccard_mean"] > shared["random_expected"]


def test_no_overlap_figure_for_one_criterion_and_one_seed(tmp_path):
    rep, _ = report([_correlated("magnitude", 0, rounds=3)])
    assert rep.overlap.empty and "mask_overlap" not in rep.figures
    assert mask_overlap_figure(rep.overlap) is None
    assert mask_profile_figure(rep.profiles.iloc[:0]) is None
    names = sorted(p.name for p in rep.save(tmp_path))
    assert names == [
        "mask_overlap.csv",
        "mask_profile.png",
        "mask_profile.svg",
        "mask_profiles.csv",
    ]


@pytest.mark.parametrize("n", [2, 5, 12])
def test_every_layer_has_a_look_of_its_own(n):
    """Layers pruned alike overlay each other exactly: colour, marker and dash all tell them apart,
    and a later layer's smaller marker sits inside an earlier one's."""
    layers = [f"layer{i}" for i in range(n)]
    styles = layer_styles(layers)
    colors = [tuple(np.round(styles[k]["color"], 3)) for k in layers]
    assert len(set(colors)) == n
    assert len({(styles[k]["marker"], str(styles[k]["ls"])) for k in layers}) == n
    sizes = [styles[k]["markersize"] for k in layers[:5]]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)


def test_profile_lines_of_coinciding_layers_stay_distinguishable():
    # fc1 and fc2 keep the same fraction every round: their lines coincide
    trials = [
        Trial("magnitude", s, [dense(), level(range(6), range(3)), level(range(3), [0, 1])])
        for s in (0, 1)
    ]
    rep, _ = report(trials)
    ax = rep.figures["mask_profile"].axes[0]
    fc1, fc2 = (
        next(ln for ln in ax.get_lines() if ln.get_gid() == f"series:layer:{k}")
        for k in ("fc1", "fc2")
    )
    assert np.allclose(fc1.get_ydata()[:2], fc2.get_ydata()[:2])  # on top of each other
    assert fc1.get_color() != fc2.get_color() and fc1.get_marker() != fc2.get_marker()
    assert fc1.get_linestyle() != fc2.get_linestyle()
    assert fc1.get_markersize() > fc2.get_markersize() and fc2.get_zorder() > fc1.get_zorder()
