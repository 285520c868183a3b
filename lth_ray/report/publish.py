"""`python -m lth_ray.report.publish`: a study lth_ray ran, published under docs/results/<name>/.

Writes the report (summary.md with its verdict, tables, figures) of the sweep(s), a copy of the
ablation file, and run.md: the commands that produced it, the machine, the versions and the sweep's
wall time as MLflow recorded it, and the provenance a reader needs to reproduce it bit for bit (the
commit and source digest the sweep ran, torch, BLAS, the CPU and its kernels, threads per trial, the
numerics environment; also provenance.json). It refuses a sweep whose code is not the code
publishing now, or a dirty tree (`--allow-unclean` goes on and says so in bold). With `--readme`, the study's block in the README (between
`<!-- study:start -->` and `<!-- study:end -->`) is rewritten from the same report, so no published
number is ever typed by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import sys
from pathlib import Path

from lth_ray import schema
from lth_ray.report.build import add_statistics_options, build_report
from lth_ray.report.mlflow_io import open_client
from lth_ray.report.provenance import (
    PREFIX_CODE,
    PREFIX_NUMERICS,
    code_problems,
    code_state,
    numerics,
    recorded,
)

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


def check_command(out: Path, command: str) -> str:
    """The reproduction check of a published folder, with the sweep's data root."""
    root = re.search(r"--data-root[ =](\S+)", command)
    return f"python -m lth_ray.report.reproduce {out.as_posix()}" + (
        f" --data-root {root.group(1)}" if root else ""
    )


def provenance_lines(code: dict, nums: dict, now_nums: dict, problems: list[str]) -> list[str]:
    """run.md's provenance: what the sweep ran with, and what differs on the publishing machine."""
    lines = []
    if problems:
        lines.append(
            "- **Not reproducible from a recorded commit: "
            + "; ".join(problems)
            + ". Its numbers need not come from any one version of the code.**"
        )
    lines += [
        f"- Code: commit `{code.get('commit', 'unknown')}`"
        f" ({'dirty' if code.get('dirty') == 'true' else 'clean'} tree, {code.get('install', '?')}),"
        f" source digest `{code.get('digest', 'unknown')[:16]}`, lth_ray {code.get('version', '?')}.",
        f"- Numerics: torch {nums.get('torch', '?')}, CPU kernels"
        f" {nums.get('cpu_capability', '?')} on {nums.get('cpu', '?')} (flags:"
        f" {nums.get('cpu_flags', '?')}), {nums.get('threads_per_trial', '?')} thread(s) per"
        f" trial; BLAS: {nums.get('blas', '?')}; numerics environment: {nums.get('env', '{}')}.",
    ]
    differ = [
        k for k in ("torch", "cpu_capability", "env") if nums and now_nums.get(k) != nums.get(k)
    ]
    if differ:
        lines.append(
            "- The publishing machine differs in "
            + ", ".join(f"{k} ({now_nums.get(k)})" for k in differ)
            + ": a rerun here agrees in distribution, not bit for bit."
        )
    return lines


def readme_block(
    name: str, out: Path, verdict: list[str], figure: str, command: str, check: str = ""
) -> str:
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
            *(
                [
                    "",
                    f"Check it bit for bit, a few rounds of two of its trials: `{check}`"
                    f" (see [run.md]({rel}/run.md) for the commit, threads and kernels it needs).",
                ]
                if check
                else []
            ),
            END,
        ]
    )


def publish_command(argv: list[str], uri: str, command: str) -> str:
    """This invocation as a reader re-runs it: every option given (the notes and statistics
    options included), with the tracking URI and sweep command it resolved to made explicit."""
    given = {a.split("=", 1)[0] for a in argv}
    extra = [] if "--tracking-uri" in given else ["--tracking-uri", uri]
    extra += [] if "--command" in given else ["--command", command]
    return shlex.join(["python", "-m", "lth_ray.report.publish", *argv, *extra])


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
    ap.add_argument(
        "--allow-unclean",
        action="store_true",
        help="publish although the code is dirty or not the code the sweep ran (run.md says so)",
    )
    add_statistics_options(ap)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)

    uri = schema.resolve_tracking_uri(args.tracking_uri)
    out = Path(args.out)
    client = open_client(uri)
    exp = client.get_experiment_by_name(args.experiment)
    if exp is None:
        raise SystemExit(f"--experiment {args.experiment!r}: no such experiment in {uri}")
    parents = client.search_runs(
        [exp.experiment_id],
        f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_SWEEP}'",
        order_by=["attributes.start_time DESC"],
    )
    chosen = [p for p in parents if p.data.tags.get(schema.TAG_SWEEP) in (args.sweep or [])]
    chosen = chosen or parents[:1]
    sweep_code = recorded(chosen[0].data.tags, PREFIX_CODE) if chosen else {}
    sweep_nums = recorded(chosen[0].data.tags, PREFIX_NUMERICS) if chosen else {}
    now = code_state()
    problems = code_problems(sweep_code, now)
    if problems and not args.allow_unclean:
        raise SystemExit(
            "refusing to publish: "
            + "; ".join(problems)
            + ". Run the sweep from a clean tree at a commit and publish with that same code"
            " (or pass --allow-unclean, and run.md will say so in bold)."
        )
    report = build_report(
        uri, args.experiment, args.sweep, out, margin_pp=args.margin,
        primary_range=args.primary_range,
    )  # fmt: skip
    for svg in out.glob("*.svg"):  # the PNGs are what a reader opens; keep the folder small
        svg.unlink()
    shutil.copy(args.ablation, out / Path(args.ablation).name)
    sweep_ids = set(report.trials["sweep"])
    ids = [p.info.run_id for p in parents if p.data.tags.get(schema.TAG_SWEEP) in sweep_ids]
    wall, started = sweep_times(client, ids)
    commands = [p.data.tags.get(schema.TAG_COMMAND) for p in parents if p.info.run_id in ids]
    args.command = args.command or next((c for c in commands if c), "(not recorded)")
    report_cmd = publish_command(argv, uri, args.command)
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
                *provenance_lines(sweep_code, sweep_nums, numerics(), problems),
                f"- Check: `{check_command(out, args.command)}` re-runs a few rounds of two"
                " trials and compares them with trials.csv bit for bit.",
                *(f"- {n}" for n in args.note),
                "",
            ]
        )
    )
    (out / "provenance.json").write_text(
        json.dumps(
            {"code": sweep_code, "numerics": sweep_nums, "published_with": now,
             "problems": problems},
            indent=1, sort_keys=True,
        ) + "\n"
    )  # fmt: skip
    if args.readme:
        readme = Path(args.readme)
        text = readme.read_text()
        block = readme_block(
            args.experiment, out, report.verdict, args.figure, args.command,
            check_command(out, args.command),
        )  # fmt: skip
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
