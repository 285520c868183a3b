"""What the pruning masks look like: per-layer sparsity profiles and the overlap of the kept weights.

Accuracy curves say how good a ticket is, not which ticket it is. This module reads the masks
themselves (no MLflow here: the caller passes the tidy table and a loader) and answers two questions:

- Which layers does each criterion empty? `profiles`: per criterion x setting x round, the percent
  of each prunable layer's weights kept, mean and sd over seeds.
- Do different criteria (or different seeds of one criterion) find the same ticket? `overlap`: the
  Jaccard index |A n B| / |A u B| of the kept weights A and B of two trials at the same round, per
  layer and over all prunable layers together.

Definitions:
- Only complete trials of the ticket arm enter (control "none"; the reinit and random-mask controls
  reuse or redraw a ticket's mask, they do not find one). The iterative and the one-shot schedule are
  separate arms: their rounds are different pruning paths, so they are never paired with each other.
- A setting is one value of every grid axis but criterion and seed: prune rate, schedule and any
  extra axis (`prune.rewind`, `model.width`, ...). Masks are compared at matched levels only: same
  setting and same round, i.e. the same number of prune steps at the same rate.
- Criteria pairs: two criteria of one setting with the same seed (same dense initialisation and data
  order), one Jaccard per seed, then mean, sd and n over seeds. Seed pairs: two seeds of one
  criterion and setting, every pair of seeds, then mean, sd and n over pairs (a = b = criterion).
- Prunable layers of a trial: the layers that lose at least one weight at some loaded round of that
  trial; layers excluded from pruning stay all True and would only inflate the overlap. "all" pools
  the prunable layers of either trial of the pair (their union); the per-layer rows list the same
  layers. `profiles` lists every layer that is prunable in at least one trial of the report.
- Both kept sets empty (a layer both trials emptied): the Jaccard index is undefined (NaN) and is
  left out of the mean and of n_pairs.
- Chance reference (`random_expected`): two independent uniformly random masks with densities d1, d2
  of a layer with N weights share d1 d2 N weights on average, so E[J] ~ d1 d2 / (d1 + d2 - d1 d2)
  (ratio of expectations; exact as N grows). For "all" the random masks keep each layer's densities,
  as the random-mask control does: E[J] ~ sum_l d1l d2l N_l / sum_l (d1l + d2l - d1l d2l) N_l. An
  overlap above it means the two masks agree on which weights to keep within each layer, not only on
  how many. At round 0 (dense) every overlap and every reference is 1.
- weights_remaining_pct: the table's `weights_remaining` (percent of prunable weights left), mean
  over the seeds (profiles) or over both trials of every pair (overlap); where the table lacks it,
  the masks' own percent over the trial's prunable layers.

Each (run, round) mask is loaded once; masks are read round by round and dropped after their counts
are taken, so memory holds one round of all trials at a time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from lth_ray.report.plots import (
    MARKERS,
    STYLE,
    _legend,
    _sort_values,
    criterion_palette,
    distinct_colors,
    facet_title,
    format_weights_axis,
    save_figure,
)
from lth_ray.report.stats import fmt_level
from lth_ray.report.tidy import COMPLETE, axis_columns

MaskLoader = Callable[[str, int], Mapping[str, torch.Tensor] | None]

MAX_TRIALS = 200
MAX_ROUNDS = 40
ALL_LAYERS = "all"
CRITERIA, SEEDS = "criteria", "seeds"
PROFILE_STATS = ["weights_remaining_pct", "layer", "kept_pct_mean", "kept_pct_sd", "n"]
OVERLAP_STATS = [
    "weights_remaining_pct",
    "layer",
    "jaccard_mean",
    "jaccard_sd",
    "n_pairs",
    "random_expected",
]
JACCARD_LABEL = "Jaccard overlap of kept weights\n(all prunable layers)"
KEPT_LABEL = "Weights kept in the layer (%)"


@dataclass
class MaskReport:
    profiles: pd.DataFrame  # per criterion x setting x round x layer: % kept, mean/sd over seeds
    overlap: pd.DataFrame  # per pair kind x pair x setting x round x layer: Jaccard, chance
    figures: dict[str, Figure] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def save_tables(self, out_dir: str | Path) -> list[Path]:
        """mask_profiles.csv and mask_overlap.csv into `out_dir` (6 significant digits)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "mask_profiles.csv", out / "mask_overlap.csv"]
        self.profiles.to_csv(paths[0], index=False, float_format="%.6g")
        self.overlap.to_csv(paths[1], index=False, float_format="%.6g")
        return paths

    def save(self, out_dir: str | Path) -> list[Path]:
        """The tables and the figures (PNG + SVG) into `out_dir`."""
        paths = self.save_tables(out_dir)
        for name, fig in self.figures.items():
            paths += save_figure(fig, Path(out_dir), name)
        return paths


def setting_keys(trials: pd.DataFrame) -> list[str]:
    """Criterion first, then the axes that make up a setting (every grid axis but seed and control)."""
    return ["criterion", "prune_rate", *axis_columns(trials), "schedule"]


def profile_columns(trials: pd.DataFrame) -> list[str]:
    return setting_keys(trials) + ["round"] + PROFILE_STATS


def overlap_columns(trials: pd.DataFrame) -> list[str]:
    return ["kind", "a", "b"] + setting_keys(trials)[1:] + ["round"] + OVERLAP_STATS


def ticket_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Rows of complete ticket-arm trials (control "none") with a logged round."""
    rows = trials[
        (trials["status"] == COMPLETE) & (trials["control"] == "none") & trials["round"].notna()
    ]
    if "control_index" in rows:
        rows = rows[rows["control_index"].fillna(0) == 0]
    return rows


def random_jaccard(d1, d2):
    """Expected Jaccard index of two independent uniformly random masks with densities d1, d2:
    d1 d2 / (d1 + d2 - d1 d2); NaN where both are empty (works on floats and arrays)."""
    d1, d2 = np.asarray(d1, dtype=float), np.asarray(d2, dtype=float)
    union = d1 + d2 - d1 * d2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, d1 * d2 / np.where(union > 0, union, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|A n B| / |A u B| of two boolean masks of one shape; NaN when both are empty."""
    inter, union = _pair_counts(_flat(a), _flat(b))
    return inter / union if union else math.nan


def _flat(mask: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(mask).detach().cpu().reshape(-1)
    return t if t.dtype == torch.bool else t != 0


def _pair_counts(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    return int((a & b).sum()), int((a | b).sum())


# ------------------------------------------------------------------------------------------------
# Which trials and rounds, and the counts taken from their masks.


@dataclass
class _Plan:
    runs: pd.DataFrame  # one row per trial: setting keys, seed, run_id
    rounds: dict[str, list[int]]  # run_id -> the rounds to load
    weights: dict[tuple[str, int], float]  # (run_id, round) -> weights_remaining (%)
    pairs: list[tuple[str, str, str]]  # (kind, run_a, run_b), run_a's criterion <= run_b's


def _plan(trials: pd.DataFrame, max_trials: int, max_rounds: int, warnings: list[str]) -> _Plan:
    keys = setting_keys(trials)
    rows = ticket_trials(trials)
    runs = rows.drop_duplicates("run_id")[keys + ["seed", "run_id"]]
    runs = runs.sort_values(keys + ["seed", "run_id"], kind="stable", na_position="last")
    twins = runs.duplicated(keys + ["seed"], keep="first")
    if twins.any():
        warnings.append(
            f"{int(twins.sum())} trial run(s) repeat a criterion/setting/seed of another run: "
            f"masks of the first run only ({', '.join(runs.loc[twins, 'run_id'].iloc[:4])} ignored)"
        )
        runs = runs[~twins]
    if len(runs) > max_trials:
        warnings.append(
            f"{len(runs)} complete ticket trials: masks of the first {max_trials} only "
            "(in criterion/setting/seed order)"
        )
        runs = runs.iloc[:max_trials]
    rows = rows[rows["run_id"].isin(runs["run_id"])]
    levels = sorted({int(r) for r in rows["round"]})
    if len(levels) > max_rounds:
        picked = {levels[int(i)] for i in np.linspace(0, len(levels) - 1, max_rounds).round()}
        warnings.append(
            f"{len(levels)} rounds: masks of {len(picked)} evenly spaced rounds only "
            "(dense and the sparsest included)"
        )
        rows = rows[rows["round"].isin(picked)]
    rounds = {k: sorted(int(r) for r in g["round"].unique()) for k, g in rows.groupby("run_id")}
    weights = {
        (r.run_id, int(r.round)): float(r.weights_remaining)
        for r in rows.drop_duplicates(["run_id", "round"]).itertuples(index=False)
    }
    pairs = []
    for kind, by in ((CRITERIA, keys[1:] + ["seed"]), (SEEDS, keys)):
        for _, g in runs.groupby(by, sort=False, dropna=False):
            ids = list(g.sort_values(["criterion", "seed"], kind="stable")["run_id"])
            pairs += [(kind, a, b) for a, b in itertools.combinations(ids, 2)]
    return _Plan(runs.reset_index(drop=True), rounds, weights, pairs)


@dataclass
class _Counts:
    layers: list[str] = field(default_factory=list)  # forward order, as the masks list them
    kept: list[tuple] = field(default_factory=list)  # run, round, layer, kept, total
    pairs: list[tuple] = field(
        default_factory=list
    )  # kind, run_a, run_b, round, layer, inter, union
    missing: list[tuple[str, int]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    mismatched: set[str] = field(default_factory=set)


def _load(load_masks: MaskLoader, run: str, r: int, counts: _Counts) -> dict | None:
    try:
        masks = load_masks(run, r)
    except Exception as e:  # a damaged artifact is one missing level, not a failed report
        counts.unreadable.append(f"run {run} round {r}: {type(e).__name__}: {e}")
        masks = None
    if masks is None:
        counts.missing.append((run, r))
        return None
    return {name: _flat(m) for name, m in masks.items()}


def _count(plan: _Plan, load_masks: MaskLoader) -> _Counts:
    counts = _Counts()
    seen: dict[str, None] = {}
    for r in sorted({r for rs in plan.rounds.values() for r in rs}):
        loaded = {}
        for run in plan.runs["run_id"]:
            if r in plan.rounds.get(run, ()):
                masks = _load(load_masks, run, r, counts)
                if masks is not None:
                    loaded[run] = masks
        for run, masks in loaded.items():
            seen.update(dict.fromkeys(masks))
            counts.kept += [(run, r, k, int(m.sum()), m.numel()) for k, m in masks.items()]
        for kind, a, b in plan.pairs:
            if a in loaded and b in loaded:
                ma, mb = loaded[a], loaded[b]
                for layer in (k for k in ma if k in mb):
                    if ma[layer].shape != mb[layer].shape:
                        counts.mismatched.add(layer)
                        continue
                    counts.pairs.append((kind, a, b, r, layer, *_pair_counts(ma[layer], mb[layer])))
    counts.layers = list(seen)
    return counts


def _count_warnings(counts: _Counts, plan: _Plan) -> list[str]:
    out = []
    if counts.missing:
        wanted = sum(len(v) for v in plan.rounds.values())
        runs = sorted({run for run, _ in counts.missing})
        shown = ", ".join(f"{run} round {r}" for run, r in counts.missing[:4])
        out.append(
            f"{len(counts.missing)} of {wanted} mask(s) missing in {len(runs)} trial run(s) "
            f"({shown}{', ...' if len(counts.missing) > 4 else ''}): those levels are left out "
            "of the mask profiles and overlaps"
        )
    out += [f"masks unreadable, {u}" for u in counts.unreadable[:4]]
    if counts.mismatched:
        out.append(
            f"layer(s) {', '.join(sorted(counts.mismatched))} differ in shape between trials: "
            "left out of the overlaps where they do"
        )
    return out


# ------------------------------------------------------------------------------------------------
# Tables.


def _kept_table(counts: _Counts, plan: _Plan) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    """Per run x round x layer counts with the run's keys; and each run's prunable layers."""
    kept = pd.DataFrame.from_records(
        counts.kept, columns=["run_id", "round", "layer", "kept", "total"]
    )
    cut = kept[kept["kept"] < kept["total"]]
    prunable = {run: set(g["layer"]) for run, g in cut.groupby("run_id")}
    mine = [layer in prunable.get(run, ()) for run, layer in zip(kept["run_id"], kept["layer"])]
    own = kept[pd.Series(mine, index=kept.index, dtype=bool)]
    own = own.groupby(["run_id", "round"])[["kept", "total"]].sum()
    from_masks = (100.0 * own["kept"] / own["total"]).to_dict()
    wr = [_weights(plan, from_masks, run, r) for run, r in zip(kept["run_id"], kept["round"])]
    kept = kept.assign(weights_remaining=wr).merge(plan.runs, on="run_id", how="left")
    return kept, prunable


def _weights(plan: _Plan, from_masks: dict, run: str, r: int) -> float:
    wr = plan.weights.get((run, r), math.nan)
    return wr if np.isfinite(wr) else from_masks.get((run, r), 100.0)


def _sort(table: pd.DataFrame, keys: list[str], layers: list[str]) -> pd.DataFrame:
    order = {name: i for i, name in enumerate([ALL_LAYERS, *layers])}
    return table.sort_values(
        keys + ["round", "layer"],
        key=lambda s: s.map(order) if s.name == "layer" else s,
        kind="stable",
        na_position="last",
    ).reset_index(drop=True)


def _profiles(kept: pd.DataFrame, trials: pd.DataFrame, layers: list[str]) -> pd.DataFrame:
    keys = setting_keys(trials)
    pruned = set(kept.loc[kept["kept"] < kept["total"], "layer"])
    rows = kept[kept["layer"].isin(pruned)].assign(kept_pct=lambda d: 100.0 * d.kept / d.total)
    if rows.empty:
        return pd.DataFrame(columns=profile_columns(trials))
    out = (
        rows.groupby(keys + ["round", "layer"], sort=False, dropna=False)
        .agg(
            weights_remaining_pct=("weights_remaining", "mean"),
            kept_pct_mean=("kept_pct", "mean"),
            kept_pct_sd=("kept_pct", "std"),
            n=("kept_pct", "count"),
        )
        .reset_index()
    )
    return _sort(out[profile_columns(trials)], keys, layers)


def _overlap(
    counts: _Counts, kept: pd.DataFrame, prunable: dict, trials: pd.DataFrame
) -> pd.DataFrame:
    keys = setting_keys(trials)
    columns = overlap_columns(trials)
    pairs = pd.DataFrame.from_records(
        counts.pairs, columns=["kind", "run_a", "run_b", "round", "layer", "inter", "union"]
    )
    either = [
        layer in prunable.get(a, ()) or layer in prunable.get(b, ())
        for a, b, layer in zip(pairs["run_a"], pairs["run_b"], pairs["layer"])
    ]
    pairs = pairs[pd.Series(either, index=pairs.index, dtype=bool)]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    side = kept[["run_id", "round", "layer", "kept", "total", "weights_remaining", *keys]]
    pairs = pairs.merge(
        side.rename(columns=lambda c: c if c in ("round", "layer") else f"{c}_a"),
        left_on=["run_a", "round", "layer"],
        right_on=["run_id_a", "round", "layer"],
    ).merge(
        side[
            ["run_id", "round", "layer", "kept", "total", "weights_remaining", "criterion"]
        ].rename(columns=lambda c: c if c in ("round", "layer") else f"{c}_b"),
        left_on=["run_b", "round", "layer"],
        right_on=["run_id_b", "round", "layer"],
    )
    # expected intersection and union of random masks with these counts (per layer, so they add up)
    e_inter = pairs["kept_a"] * pairs["kept_b"] / pairs["total_a"]
    pairs = pairs.assign(
        e_inter=e_inter,
        e_union=pairs["kept_a"] + pairs["kept_b"] - e_inter,
        wr=(pairs["weights_remaining_a"] + pairs["weights_remaining_b"]) / 2,
        a=pairs["criterion_a"],
        b=pairs["criterion_b"],
        **{k: pairs[f"{k}_a"] for k in keys[1:]},
    )
    ids = ["kind", "a", "b", *keys[1:], "run_a", "run_b", "round", "wr"]
    sums = ["inter", "union", "e_inter", "e_union"]
    pooled = pairs.groupby(ids, sort=False, dropna=False)[sums].sum().reset_index()
    each = pd.concat([pooled.assign(layer=ALL_LAYERS), pairs[ids + ["layer", *sums]]])
    with np.errstate(invalid="ignore", divide="ignore"):
        each = each.assign(
            jaccard=np.where(each["union"] > 0, each["inter"] / each["union"], np.nan),
            random=np.where(each["e_union"] > 0, each["e_inter"] / each["e_union"], np.nan),
        )
    out = (
        each.groupby(["kind", "a", "b", *keys[1:], "round", "layer"], sort=False, dropna=False)
        .agg(
            weights_remaining_pct=("wr", "mean"),
            jaccard_mean=("jaccard", "mean"),
            jaccard_sd=("jaccard", "std"),
            n_pairs=("jaccard", "count"),
            random_expected=("random", "mean"),
        )
        .reset_index()
    )
    return _sort(out[columns], ["kind", "a", "b", *keys[1:]], counts.layers)


# ------------------------------------------------------------------------------------------------
# Figures.


def _facet_keys(table: pd.DataFrame, keys: Iterable[str]) -> list[str]:
    """The setting axes that vary in the table: one panel per combination of their values."""
    return [k for k in keys if table[k].nunique(dropna=False) > 1]


def _facets(table: pd.DataFrame, keys: list[str]) -> list[dict]:
    if not keys:
        return [{}]
    order = {k: _sort_values(table[k]) for k in keys}
    combos = [dict(zip(keys, c)) for c in table[keys].drop_duplicates().itertuples(index=False)]
    return sorted(
        combos,
        key=lambda f: [order[k].index(f[k]) if f[k] in order[k] else len(order[k]) for k in keys],
    )


def _where(table: pd.DataFrame, facet: dict) -> pd.DataFrame:
    for k, v in facet.items():
        table = table[table[k].isna()] if pd.isna(v) else table[table[k] == v]
    return table


def _sweep_title(what: str, sweep: str | None, n: pd.Series, unit: str) -> str:
    lo, hi = (int(n.min()), int(n.max())) if len(n) else (0, 0)
    count = f"{lo}" if lo == hi else f"{lo}-{hi}"
    head = f"{what} — sweep {sweep}" if sweep else what
    return f"{head}\ncomplete ticket trials (no control); mean over n={count} {unit}"


# five patterns against eight markers: marker and dash repeat together only every 40 layers
LAYER_DASHES = (
    "-",
    (0, (5, 2)),
    (0, (1.2, 1.6)),
    (0, (7, 2, 1.5, 2)),
    (0, (3, 1.5, 1, 1.5, 1, 1.5)),
)


def layer_styles(layers: list[str]) -> dict[str, dict]:
    """One look per layer that stays legible when layers coincide (layers pruned alike overlay each
    other exactly): a colour of its own (plots.distinct_colors), a marker, a dash pattern, and markers shrinking in forward order so that a later layer's marker
    sits inside an earlier one's. A sequential map would make neighbouring layers alike."""
    colors = distinct_colors(len(layers))
    return {
        layer: {
            "color": colors[k % len(colors)],
            "marker": MARKERS[k % len(MARKERS)],
            "ls": LAYER_DASHES[k % len(LAYER_DASHES)],
            "markersize": max(8.0 - 0.9 * k, 3.0),
            "markerfacecolor": "white" if k % 2 else colors[k % len(colors)],
            "markeredgewidth": 1.3,
        }
        for k, layer in enumerate(layers)
    }


def _kept_axis(ax, values: Iterable[float]) -> None:
    """Kept % on a log scale (global pruning spreads the layers over decades), ticks at 1-2-5 steps;
    symmetric-log when a layer is emptied: linear below the lowest decade, so that 0% stays visible."""
    values = [v for v in values if np.isfinite(v)]
    low = min((v for v in values if v > 0), default=100.0)
    floor = 10.0 ** math.floor(math.log10(low))
    emptied = any(v == 0 for v in values)
    bottom = 0.0 if emptied else low / 1.3
    ticks = [m * floor * 10**e for e in range(4) for m in (1, 2, 5)]
    ticks = [t for t in ticks if bottom <= t <= 100.0] + ([0.0] if emptied else [])
    if emptied:
        ax.set_yscale("symlog", linthresh=floor, linscale=0.5)
        ax.set_ylim(-0.05 * floor, 130.0)
    else:
        ax.set_yscale("log")
        ax.set_ylim(bottom, 130.0)
    ax.yaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if v == 0 else fmt_level(v)))
    ax.yaxis.set_minor_locator(NullLocator())


def mask_profile_figure(profiles: pd.DataFrame, sweep: str | None = None) -> Figure | None:
    """One panel per criterion (columns) and per varying setting (rows): x = weights remaining,
    y = percent of each layer's weights kept, one line per layer; the dashed grey diagonal is the
    network-wide percent, i.e. where every layer would sit under uniform pruning."""
    if profiles.empty:
        return None
    keys = [c for c in profiles.columns if c not in ("round", *PROFILE_STATS)]
    facets = _facets(profiles, _facet_keys(profiles, keys[1:]))
    criteria = _sort_values(profiles["criterion"])
    layers = list(dict.fromkeys(profiles["layer"]))
    styles = layer_styles(layers)
    span = list(profiles["weights_remaining_pct"])
    ncols = len(criteria)
    with rc_context(STYLE), sns.axes_style("whitegrid"):
        fig = Figure(figsize=(3.0 + 4.2 * ncols, 1.2 + 3.6 * len(facets)), layout="constrained")
        axes = fig.subplots(len(facets), ncols, squeeze=False, sharey=True)
        for (i, facet), (j, criterion) in itertools.product(enumerate(facets), enumerate(criteria)):
            ax, d = axes[i, j], _where(profiles, {"criterion": criterion, **facet})
            title = facet_title({"criterion": criterion, **facet})
            ax.set_title(title)
            if d.empty:
                ax.text(0.5, 0.5, "no masks", ha="center", va="center", transform=ax.transAxes)
            wr = sorted(set(d["weights_remaining_pct"]), reverse=True)
            ax.plot(wr, wr, color="0.5", ls=(0, (4, 2)), lw=1.0, zorder=1, gid="reference:overall",
                    label="whole network\n(uniform pruning)")  # fmt: skip
            for k, layer in enumerate(layers):
                g = d[d["layer"] == layer].sort_values("round")
                if g.empty:
                    continue
                ax.plot(
                    g["weights_remaining_pct"],
                    g["kept_pct_mean"],
                    lw=1.6,
                    label=layer,
                    gid=f"series:layer:{layer}",
                    zorder=2 + 0.01 * k,
                    **styles[layer],
                )
            format_weights_axis(ax, wr, span)
            _kept_axis(ax, profiles["kept_pct_mean"])
            ax.set_ylabel(KEPT_LABEL if j == 0 else "")
        _legend(fig, axes.flat, False)
        fig.suptitle(
            _sweep_title("Per-layer sparsity of the masks", sweep, profiles["n"], "seeds"),
            fontsize=12,
        )
    return fig


def pair_label(kind: str, a: str, b: str) -> str:
    return f"{a} vs {b} (same seed)" if kind == CRITERIA else f"{a}: seed vs seed"


def _draw_pair(ax, g: pd.DataFrame, kind: str, a: str, b: str, palette: dict, k: int) -> None:
    g = g.sort_values("round")
    x = g["weights_remaining_pct"]
    name = f"{a}|{b}" if kind == CRITERIA else a
    style = {"ls": "-", "marker": MARKERS[k % len(MARKERS)], "markersize": 6.5}
    if kind == CRITERIA:  # line in a's colour, markers filled with b's: both names in one glyph
        style.update(markerfacecolor=palette[b], markeredgecolor=palette[a], markeredgewidth=1.4)
    else:
        style.update(ls=(0, (4, 2)), marker="o", markersize=3.5)
    ax.plot(x, g["jaccard_mean"], color=palette[a], lw=1.8, label=pair_label(kind, a, b),
            gid=f"series:{kind}:{name}", **style)  # fmt: skip
    ax.plot(x, g["random_expected"], color=palette[a], ls=":", lw=0.9, alpha=0.9,
            label="_random", gid=f"random:{kind}:{name}")  # fmt: skip


def mask_overlap_figure(overlap: pd.DataFrame, sweep: str | None = None) -> Figure | None:
    """One panel per varying setting: x = weights remaining, y = Jaccard over all prunable layers;
    a solid line per criteria pair, a dashed line per criterion for seed vs seed, and a thin dotted
    line in the same colour per series for two random masks with the same per-layer densities."""
    overall = overlap[overlap["layer"] == ALL_LAYERS] if not overlap.empty else overlap
    if overall.empty:
        return None
    keys = [c for c in overall.columns if c not in ("kind", "a", "b", "round", *OVERLAP_STATS)]
    facets = _facets(overall, _facet_keys(overall, keys))
    palette = criterion_palette(sorted(set(overall["a"]) | set(overall["b"])))
    series = overall[["kind", "a", "b"]].drop_duplicates()
    series = series.sort_values(["kind", "a", "b"], kind="stable").itertuples(index=False)
    series = list(series)
    span = list(overall["weights_remaining_pct"])
    ncols = min(len(facets), 3)
    nrows = math.ceil(len(facets) / ncols)
    with rc_context(STYLE), sns.axes_style("whitegrid"):
        fig = Figure(figsize=(3.6 + 4.8 * ncols, 1.2 + 3.9 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        for ax, facet in zip(axes.flat, facets):
            d = _where(overall, facet)
            for k, (kind, a, b) in enumerate(series):
                g = d[(d["kind"] == kind) & (d["a"] == a) & (d["b"] == b)]
                if not g.empty:
                    _draw_pair(ax, g, kind, a, b, palette, k)
            ax.plot([], [], color="0.3", ls=":", lw=0.9, gid="legend:random",
                    label="random masks, same per-layer\ndensities (dotted, same colour)")  # fmt: skip
            ax.set_title(facet_title(facet) if facet else "")
            format_weights_axis(ax, list(d["weights_remaining_pct"]), span)
            ax.set_ylim(-0.02, 1.04)
        for ax in axes.flat[len(facets) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel(JACCARD_LABEL)
        _legend(fig, axes.flat[: len(facets)], False)
        fig.suptitle(
            _sweep_title(
                "Do criteria find the same ticket? Overlap of the kept weights",
                sweep,
                overall["n_pairs"],
                "seeds or seed pairs",
            ),
            fontsize=12,
        )
    return fig


# ------------------------------------------------------------------------------------------------
# Entry point.


def mask_report(
    trials: pd.DataFrame,
    load_masks: MaskLoader,
    max_trials: int = MAX_TRIALS,
    max_rounds: int = MAX_ROUNDS,
) -> MaskReport:
    """Profiles, overlaps and their figures from the tidy table and a mask loader.

    `load_masks(run_id, round)` returns {layer weight name: bool tensor, True = kept} or None when
    the trial has no masks for that round (a warning, the level is left out). At most `max_trials`
    trials (in criterion/setting/seed order) and `max_rounds` evenly spaced rounds are loaded.
    """
    warnings: list[str] = []
    plan = _plan(trials, max_trials, max_rounds, warnings)
    counts = _count(plan, load_masks)
    warnings += _count_warnings(counts, plan)
    kept, prunable = _kept_table(counts, plan)
    profiles = _profiles(kept, trials, counts.layers)
    overlap = _overlap(counts, kept, prunable, trials)
    if plan.runs.empty:
        warnings.append("no complete ticket trial (control none): no mask profiles or overlaps")
    elif not kept.empty and not prunable:
        warnings.append("no layer lost a weight in any loaded mask: nothing to profile")
    sweeps = list(dict.fromkeys(trials["sweep"].dropna())) if "sweep" in trials else []
    sweep = "+".join(map(str, sweeps)) or None
    figures = {
        "mask_profile": mask_profile_figure(profiles, sweep),
        "mask_overlap": mask_overlap_figure(overlap, sweep),
    }
    return MaskReport(
        profiles, overlap, {k: v for k, v in figures.items() if v is not None}, warnings
    )
