"""build_report (what the sweep calls at its end) and the `python -m lth_ray.report` CLI."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from lth_ray import schema
from lth_ray.report.compare import DEFAULT_MARGIN_PP, Analysis, analyse
from lth_ray.report.compare_plots import comparison_figures
from lth_ray.report.curves import curves_table, learning_curves
from lth_ray.report.errors import ReportError
from lth_ray.report.mlflow_io import Transport, load_sweep, open_client
from lth_ray.report.plots import FigureBuilder, save_figure
from lth_ray.report.stats import group_keys, level_stats, summarize
from lth_ray.report.tables import summary_markdown, write_tables
from lth_ray.report.tidy import COMPLETE
from lth_ray.report.verdict import verdict

log = logging.getLogger(__name__)


@dataclass
class Report:
    out_dir: Path
    files: list[Path]  # everything written
    trials: pd.DataFrame  # tidy: one row per trial x round (MLflow units)
    summary: pd.DataFrame  # one row per criterion x prune rate x schedule x control (percent)
    warnings: list[str]
    levels: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per group x round
    figures: dict[str, Figure] = field(default_factory=dict)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)  # paired, per level
    verdict: list[str] = field(default_factory=list)  # markdown lines
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)  # per evaluation
    analysis: Analysis | None = None  # primary tests, non-inferiority, excluded seeds


def _data_warnings(trials: pd.DataFrame, levels: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    out = []
    per_trial = trials.drop_duplicates("trial")
    inc = per_trial[per_trial["status"] != COMPLETE]
    if len(inc):
        states = inc["run_status"].value_counts().sort_index()
        out.append(
            f"{len(inc)} incomplete trial(s) ({', '.join(f'{n} {s}' for s, n in states.items())}): "
            "listed in summary.md, marked x in plots, not in the statistics"
        )
    names = summary[group_keys(summary)].astype(str).agg("/".join, axis=1)
    for n, what in ((0, "no complete trial yet: no statistics"),
                    (1, "only 1 complete seed: lines without confidence bands")):  # fmt: skip
        hit = list(names[summary["n_seeds"] == n])
        if hit:
            shown = ", ".join(hit[:6]) + (", ..." if len(hit) > 6 else "")
            out.append(f"{len(hit)} group(s) with {what} ({shown})")
    if trials["num_classes"].isna().all():
        out.append("no trial has the lth_ray.num_classes tag: no chance line or collapse level")
    wide = levels[levels["weights_remaining_spread_pct"] > 0.01 * levels["weights_remaining_pct"]]
    if len(wide):
        out.append(
            f"{len(wide)} level(s) where seeds differ in weights remaining by more than 1% "
            "(skipped rounds); levels.csv averages them per round, the comparisons and figures "
            "at equal sparsity"
        )
    return out


def build_report(
    tracking_uri: str | None,
    experiment: str | None = None,
    sweep: str | list[str] | None = None,
    out_dir: str | Path | None = None,
    transport: Transport | None = None,
    hue: str = "criterion",
    every_sweep: bool = False,
    masks: bool = True,
    margin_pp: float = DEFAULT_MARGIN_PP,
    primary_range: tuple[float, float] | None = None,
) -> Report:
    """Read one sweep from MLflow and write tables and figures to `out_dir` (default reports/<sweep>/).

    Raises ReportError when there is nothing to report (unknown store or experiment, no sweep, a
    sweep without trials). `transport` replaces the HTTP call of the REST bulk reader (tests).
    `hue` is the axis each figure compares with one line per value (a tidy column: criterion,
    prune_rate, or a varying field such as prune.rewind); the other varying axes become panels.
    `margin_pp`: the non-inferiority margin of "matches dense"; `primary_range`: the weights
    remaining (%, high and low) the primary tests average over (default: every pruned level).
    """
    if not margin_pp >= 0:
        raise ReportError(f"--margin: expected a margin >= 0 percentage points, got {margin_pp}")
    data = load_sweep(tracking_uri, experiment, sweep, transport, every_sweep=every_sweep)
    trials = data.trials
    levels = level_stats(trials)
    analysis = analyse(trials, margin_pp, primary_range)
    summary = summarize(trials, levels, analysis.noninferiority)
    warnings = data.warnings + _data_warnings(trials, levels, summary)
    label = "+".join(r.sweep_id for r in data.refs) or data.ref.sweep_id
    out = Path(out_dir) if out_dir is not None else Path("reports") / label
    out.mkdir(parents=True, exist_ok=True)
    files = write_tables(trials, levels, summary, out)
    comparisons = analysis.levels
    for name, table in (("comparisons", comparisons), ("primary", analysis.primary),
                        ("noninferiority", analysis.noninferiority),
                        ("comparisons_by_seed", analysis.seeds)):  # fmt: skip
        table.to_csv(out / f"{name}.csv", index=False, float_format="%.6g")
        files.append(out / f"{name}.csv")
    lines = verdict(analysis)
    curves = curves_table(trials, data.curves)
    hue = schema.FIELD_TAGS.get(hue, hue)
    try:
        builder = FigureBuilder(trials, levels, data.ref.sweep_id, hue)
    except ValueError as e:
        raise ReportError(str(e)) from None
    figures = builder.all()
    figures.update(comparison_figures(comparisons, analysis.seeds))
    for name, y in (("learning_curves", "val_acc_pct"), ("learning_curves_loss", "val_loss")):
        fig = learning_curves(curves, y)
        if fig is not None:
            figures[name] = fig
    if masks and data.load_masks is not None:
        from lth_ray.report.masks import mask_report

        shapes = mask_report(trials, data.load_masks)
        warnings += shapes.warnings
        files += shapes.save_tables(out)
        figures.update(shapes.figures)
    lmc = _instability(tracking_uri, data)
    if lmc is not None:
        figures.update(lmc.figures)
    for name, fig in figures.items():
        files += save_figure(fig, out, name)
    meta = {
        "sweep": label,
        "experiment": data.ref.experiment_name,
        "reader": data.reader,
    }
    md = out / "summary.md"
    md.write_text(
        summary_markdown(trials, levels, summary, meta, warnings, list(figures), verdict=lines)
    )
    if lmc is not None:
        from lth_ray.report import instability

        written, section = instability.write(lmc, out)
        files += written
        md.write_text(md.read_text() + "\n" + section)
    files.append(md)
    for w in warnings:
        log.warning(w)
    if lmc is not None:  # its own section of summary.md; beside the trials' verdict here
        lines = [*lines, *lmc.lines]
    return Report(
        out, files, trials, summary, warnings, levels, figures, comparisons, lines, curves, analysis
    )


def _instability(tracking_uri: str | None, data):
    """The sweep's instability analysis, when it ran one (None otherwise)."""
    from lth_ray.report.instability import instability_report

    client = open_client(schema.resolve_tracking_uri(tracking_uri))
    sweeps = [r.sweep_id for r in data.refs] or [data.ref.sweep_id]
    return instability_report(client, data.ref.experiment_id, sweeps)


def weights_range(text: str) -> tuple[float, float]:
    """'80:4.5' -> (80.0, 4.5): a range of weights remaining in percent."""
    try:
        hi, lo = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HIGH:LOW weights remaining in %, e.g. 80:4.5, got {text!r}"
        ) from None
    if not (0 < lo <= hi <= 100):
        raise argparse.ArgumentTypeError(f"expected 0 < LOW <= HIGH <= 100, got {text!r}")
    return hi, lo


def add_statistics_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN_PP,
        help="non-inferiority margin of 'matches dense', percentage points of test accuracy "
        f"(default {DEFAULT_MARGIN_PP:g})",
    )
    parser.add_argument(
        "--primary-range",
        type=weights_range,
        help="HIGH:LOW weights remaining (%%) the primary tests average over "
        "(default: every pruned level of the schedule)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lth_ray.report",
        description="Tables and confidence-band plots of one lth_ray sweep, read from MLflow.",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument(
        "--experiment", help="experiment (ablation) name; default: the one holding the newest sweep"
    )
    parser.add_argument(
        "--sweep",
        action="append",
        help="sweep id (tag lth_ray.sweep); repeat it to report a study run in parts as one;"
        " default: the newest sweep",
    )
    parser.add_argument(
        "--all-sweeps",
        action="store_true",
        help="with --experiment: every sweep of the experiment, as one study",
    )
    parser.add_argument(
        "--no-masks", action="store_true", help="skip the mask profiles and overlaps (artifacts)"
    )
    parser.add_argument("--out", help="output folder (default: reports/<sweep>/)")
    parser.add_argument(
        "--hue",
        default="criterion",
        help="axis compared by the lines of every figure: criterion (default), prune_rate, or a "
        "varying field such as prune.rewind; the other varying axes become panels",
    )
    add_statistics_options(parser)
    args = parser.parse_args(argv)
    # The CLI owns the console: warnings logged by build_report print once, as "warning: ...".
    logger = logging.getLogger("lth_ray.report")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        report = build_report(
            args.tracking_uri,
            args.experiment,
            args.sweep,
            args.out,
            hue=args.hue,
            every_sweep=args.all_sweeps,
            masks=not args.no_masks,
            margin_pp=args.margin,
            primary_range=args.primary_range,
        )
    except ReportError as e:
        print(f"lth_ray.report: error: {e}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    n = report.trials["trial"].nunique()
    print(f"report of {n} trials written to {report.out_dir} ({len(report.files)} files)")
    return 0
