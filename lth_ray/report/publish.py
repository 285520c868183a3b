"""`python -m lth_ray.report.publish`: a study lth_ray ran, published under docs/results/<name>/.

Writes the report (summary.md with its verdict, tables, figures) of the sweep(s), a copy of the
ablation file, and run.md: the commands that produced it, the machine, the versions and the sweep's
wall time as MLflow recorded it. With `--readme`, the study's block in the README (between
`<!-- study:start -->` and `<!-- study:end -->`) is rewritten from the same report, so no published
number is ever typed by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
from pathlib import Path

from lth_ray import schema
from lth_ray.report.build import build_report
from lth_ray.report.mlflow_io import open_client, resolve_tracking_uri

START, END = "<!-- study:start -->", "<!-- study:end -->"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores ({cpu}), {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def sweep_times(client, parent_run_ids: list[str]) -> tuple[float, str]:
    """Wall time of the sweeps (first start to last end) and the first start as a date."""
    runs = [client.get_run(r) for r in parent_run_ids if r]
    starts = [r.info.start_time for r in runs if r.info.start_time]
    ends = [r.info.end_time for r in runs if r.info.end_time]
    if not starts or not ends:
        return float("nan"), "unknown"
    first = dt.datetime.fromtimestamp(min(starts) / 1000, tz=dt.timezone.utc)
    return (max(ends) - min(starts)) / 1000.0, first.strftime("%Y-%m-%d %H:%M UTC")


def readme_block(name: str, out: Path, verdict: list[str], figure: str, command: str) -> str:
    rel = out.as_posix()
    return "\n".join(
        [
            START,
            f"### Published study: `{name}` ([full report]({rel}/summary.md))",
            "",
            f"![{figure}]({rel}/{figure}.png)",
            "",
            *verdict,
            f"Reproduce it (the numbers above are generated from its report): `{command}`",
            END,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lth_ray.report.publish", description=__doc__)
    ap.add_argument("--tracking-uri")
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--sweep", action="append", help="sweep id(s); default: the newest")
    ap.add_argument("--ablation", required=True, help="the ablation file the sweep ran")
    ap.add_argument("--out", required=True, help="folder, e.g. docs/results/<name>")
    ap.add_argument(
        "--command",
        help="the sweep command, as a reader runs it (default: the one the sweep recorded)",
    )
    ap.add_argument("--readme", help="README to update between the study markers")
    ap.add_argument("--note", action="append", default=[], help="a line for run.md (conditions)")
    ap.add_argument("--figure", default="accuracy_vs_weights", help="the figure the README shows")
    args = ap.parse_args(argv)

    uri = resolve_tracking_uri(args.tracking_uri)
    out = Path(args.out)
    report = build_report(uri, args.experiment, args.sweep, out)
    for svg in out.glob("*.svg"):  # the PNGs are what a reader opens; keep the folder small
        svg.unlink()
    shutil.copy(args.ablation, out / Path(args.ablation).name)
    client = open_client(uri)
    parents = client.search_runs(
        [client.get_experiment_by_name(args.experiment).experiment_id],
        f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_SWEEP}'",
    )
    sweep_ids = set(report.trials["sweep"])
    ids = [p.info.run_id for p in parents if p.data.tags.get(schema.TAG_SWEEP) in sweep_ids]
    wall, started = sweep_times(client, ids)
    recorded = [p.data.tags.get(schema.TAG_COMMAND) for p in parents if p.info.run_id in ids]
    args.command = args.command or next((c for c in recorded if c), "(not recorded)")
    report_cmd = (
        f"python -m lth_ray.report.publish --tracking-uri {args.tracking_uri or uri} "
        f"--experiment {args.experiment} --ablation {args.ablation} --out {args.out} "
        f'--command "{args.command}"' + (f" --readme {args.readme}" if args.readme else "")
    )
    n = report.trials["trial"].nunique()
    (out / "run.md").write_text(
        "\n".join(
            [
                f"# How `{args.experiment}` was run",
                "",
                f"- Sweep: `{args.command}`",
                f"- Report and this folder: `{report_cmd}`",
                f"- Ablation: [{Path(args.ablation).name}]({Path(args.ablation).name})",
                f"- Started {started}; wall time of the sweep {wall / 60:.1f} min ({wall:.0f} s) for"
                f" {n} trials, as MLflow recorded the sweep's parent run.",
                f"- Machine: {machine()}.",
                *(f"- {n}" for n in args.note),
                "",
            ]
        )
    )
    if args.readme:
        readme = Path(args.readme)
        text = readme.read_text()
        block = readme_block(args.experiment, out, report.verdict, args.figure, args.command)
        if START in text and END in text:
            head, rest = text.split(START, 1)
            text = head + block + rest.split(END, 1)[1]
        else:
            raise SystemExit(f"{readme}: no {START} ... {END} block to update")
        readme.write_text(text)
    print(f"published {n} trials of '{args.experiment}' to {out} (wall {wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
