"""The sweep from Python (a notebook, a script): what `python -m lth_ray.sweep` does, as a call.

from lth_ray import run_sweep
result = run_sweep("ablations/smoke.yaml", ["prune.rounds=3"], num_cpus=2)
result.sweep_id, result.report_dir
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lth_ray import schema
from lth_ray.config.load import cli_overrides, load_ablation
from lth_ray.sweep import cli
from lth_ray.sweep.tracking import find_sweep, new_sweep_id


@dataclass(frozen=True)
class SweepResult:
    sweep_id: str
    tracking_uri: str
    report_dir: Path | None  # None when the report was not asked for or failed


class SweepFailed(RuntimeError):
    """The sweep ran but did not finish every trial (the console says why); `.exit_code` as the CLI's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_sweep(
    ablation: str | Path,
    overrides: Sequence[str] = (),
    *,
    data_root: str | None = None,
    tracking_uri: str | None = None,
    storage: str = "ray_results",
    num_cpus: int | None = None,
    address: str | None = None,
    share: bool = True,
    report: bool = True,
    sweep_id: str | None = None,
) -> SweepResult:
    """Run an ablation's sweep (overrides as `--set` takes them) and return its id and report.

    A malformed ablation raises `ConfigError` (naming the file and the field) before Ray starts;
    a sweep that ends with unfinished trials raises `SweepFailed` (resume it with the CLI's
    `--resume --sweep-id`)."""
    sets = cli_overrides(list(overrides), data_root)
    spec = load_ablation(ablation, sets)  # raises ConfigError before anything starts
    sweep_id = sweep_id or new_sweep_id()
    uri = schema.resolve_tracking_uri(tracking_uri)
    argv = [str(ablation), "--sweep-id", sweep_id, "--tracking-uri", uri, "--storage", storage]
    argv += [a for s in sets for a in ("--set", s)]
    argv += ["--no-report"]
    if num_cpus is not None:
        argv += ["--num-cpus", str(num_cpus)]
    if address is not None:
        argv += ["--address", address]
    if not share:
        argv += ["--no-share"]
    code = cli.main(argv)
    if code != cli.EXIT_OK:
        raise SweepFailed(f"sweep {sweep_id} of '{spec.name}' ended with exit code {code}", code)
    report_dir = None
    if report:
        ctx = find_sweep(uri, spec.name, sweep_id)
        report_dir = cli.run_report(ctx) if ctx is not None else None
    return SweepResult(sweep_id, uri, report_dir)
