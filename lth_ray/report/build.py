"""build_report (what the sweep calls at its end) and the `python -m lth_ray.report` CLI."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from lth_ray.report.errors import ReportError
from lth_ray.report.mlflow_io import Transport, load_sweep
from lth_ray.report.plots import FigureBuilder, save_figure
from lth_ray.report.stats import group_keys, level_stats, summarize
from lth_ray.report.tables import summary_markdown, write_tables
from lth_ray.report.tidy import COMPLETE

log = logging.getLogger(__name__)
HUE_ALIASES = {"prune.criterion": "criterion", "prune.fraction": "prune_rate"}


@dataclass
class Report:
    out_dir: Path
    files: list[Path]  # everything written
    trials: pd.DataFrame  # tidy: one row per trial x round (MLflow units)
    summary: pd.DataFrame  # one row per criterion x prune rate x schedule x control (percent)
    warnings: list[str]
    levels: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per group x round
    figures: dict[str, Figure] = field(default_factory=dict)


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
            "(skipped rounds); plotted at the seeds' mean"
        )
    return out


def build_report(
    tracking_uri: str | None,
    experiment: str | None = None,
    sweep: str | None = None,
    out_dir: str | Path | None = None,
    transport: Transport | None = None,
    hue: str = "criterion",
) -> Report:
    """Read one sweep from MLflow and write tables and figures to `out_dir` (default reports/<sweep>/).

    Raises ReportError when there is nothing to report (unknown store or experiment, no sweep, a
    sweep without trials). `transport` replaces the HTTP call of the REST bulk reader (tests).
    `hue` is the axis each figure compares with one line per value (a tidy column: criterion,
    prune_rate, or a varying field such as prune.rewind); the other varying axes become panels.
    """
    data = load_sweep(tracking_uri, experiment, sweep, transport)
    trials = data.trials
    levels = level_stats(trials)
    summary = summarize(trials, levels)
    warnings = data.warnings + _data_warnings(trials, levels, summary)
    out = Path(out_dir) if out_dir is not None else Path("reports") / data.ref.sweep_id
    out.mkdir(parents=True, exist_ok=True)
    files = write_tables(trials, levels, summary, out)
    hue = HUE_ALIASES.get(hue, hue)
    try:
        builder = FigureBuilder(trials, levels, data.ref.sweep_id, hue)
    except ValueError as e:
        raise ReportError(str(e)) from None
    figures = builder.all()
    for name, fig in figures.items():
        files += save_figure(fig, out, name)
    meta = {
        "sweep": data.ref.sweep_id,
        "experiment": data.ref.experiment_name,
        "reader": data.reader,
    }
    md = out / "summary.md"
    md.write_text(summary_markdown(trials, levels, summary, meta, warnings, list(figures)))
    files.append(md)
    for w in warnings:
        log.warning(w)
    return Report(out, files, trials, summary, warnings, levels, figures)


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
    parser.add_argument("--sweep", help="sweep id (tag lth_ray.sweep); default: the newest sweep")
    parser.add_argument("--out", help="output folder (default: reports/<sweep>/)")
    parser.add_argument(
        "--hue",
        default="criterion",
        help="axis compared by the lines of every figure: criterion (default), prune_rate, or a "
        "varying field such as prune.rewind; the other varying axes become panels",
    )
    args = parser.parse_args(argv)
    # The CLI owns the console: warnings logged by build_report print once, as "warning: ...".
    logger = logging.getLogger("lth_ray.report")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        report = build_report(
            args.tracking_uri, args.experiment, args.sweep, args.out, hue=args.hue
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
