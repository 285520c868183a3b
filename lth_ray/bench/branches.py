"""`python -m lth_ray.bench.branches`: wall time of a sweep whose controls branch per level against
the same sweep with every control waiting for its whole ticket (`tune.branch_from: whole`), in one run.

The ablation is small and real: one or more tickets (magnitude IMP, synthetic CIFAR-shaped data,
Conv-2 at reduced width), each with a reinit control, R pruning rounds. With a slot for every unit
the plan predicts the ratio of the two wall times from its critical paths (trunk + R + 1 levels
against trunk + 2R); the measurement says how much of that Ray Tune delivers, fixed costs included.
The two sweeps run one after the other on the same Ray (a local one with `--num-cpus` slots, or
`--address` of a running cluster, e.g. Ray's fake multi-node cluster), each with its own MLflow store.
Where the machine has fewer cores than the slots it is told about, the units share the cores and
the ratio says so: give every concurrent unit a core of its own for a clean number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lth_ray.bench.overhead import measure_overhead, sweep_ablation


def branching_ablation(tickets: int, rounds: int, epochs: int, quick: bool) -> dict[str, Any]:
    """`tickets` seeds of a magnitude ticket, each with a reinit control streaming behind it."""
    spec = sweep_ablation("cpu", tickets, epochs, rounds, 0.0, quick)
    spec["name"] = "bench_branches"
    spec["description"] = "lth_ray.bench.branches: per-level branches vs whole tickets"
    spec["controls"] = {"kinds": ["reinit"], "criteria": ["magnitude"]}
    spec["tune"] = {}
    if not quick:  # a larger net and data than quick; a level still takes under a second on
        # one core at 1 epoch, below Tune's per-trial costs: raise --epochs for longer levels
        spec["dataset"].update(synthetic_train=3000, synthetic_test=500, val_size=500)
        spec["model"].update(arch="conv2", width=0.25)
    return spec


def measure_branching(
    tickets: int = 1,
    rounds: int = 4,
    epochs: int = 1,
    quick: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    timeout: float = 1200.0,
) -> dict[str, Any]:
    """Both sweeps, per-level first; the wall times, Tune's own times, the planned critical paths
    and their ratios."""
    out: dict[str, Any] = {"tickets": tickets, "rounds": rounds, "epochs_per_round": epochs}
    for mode in ("level", "whole"):
        r = measure_overhead(
            "cpu",
            spec=branching_ablation(tickets, rounds, epochs, quick),
            extra_args=["--set", f"tune.branch_from={mode}"],
            timeout=timeout / 2,
            num_cpus=num_cpus or 2 * tickets,
            address=address,
        )
        if "sweep_wall_s" not in r:
            return out | {"failed": mode, **r}
        out[f"wall_{mode}_s"] = r["sweep_wall_s"]
        out[f"tune_{mode}_s"] = r.get("tune_fit_s")
        out[f"plan_{mode}"] = r.get("plan")
    out["wall_ratio"] = out["wall_level_s"] / out["wall_whole_s"]
    if out["tune_level_s"] and out["tune_whole_s"]:
        out["tune_ratio"] = out["tune_level_s"] / out["tune_whole_s"]
    # in levels of work with a slot per unit: the trunk counts as one level (round 0 = retraining)
    out["planned_ratio"] = (1 + rounds + 1) / (1 + 2 * rounds)
    return out


def report_lines(r: dict[str, Any]) -> list[str]:
    if "wall_ratio" not in r:
        return [f"not measured: {r.get('error') or r.get('skipped') or r}"]
    lines = [
        f"{r['tickets']} ticket(s) + reinit control(s), {r['rounds']} rounds of"
        f" {r['epochs_per_round']} epoch(s)",
        f"per-level branches: wall {r['wall_level_s']:.1f} s (Tune {r['tune_level_s'] or 0:.1f} s)",
        f"whole tickets:      wall {r['wall_whole_s']:.1f} s (Tune {r['tune_whole_s'] or 0:.1f} s)",
        f"ratio per-level / whole: wall {r['wall_ratio']:.2f}"
        + (f", Tune {r['tune_ratio']:.2f}" if "tune_ratio" in r else "")
        + f"; planned (critical paths in levels) {r['planned_ratio']:.2f}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lth_ray.bench.branches", description=__doc__)
    ap.add_argument("--tickets", type=int, default=1, help="seeds, each a ticket and its control")
    ap.add_argument("--rounds", type=int, default=4, help="pruning rounds R")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per round")
    ap.add_argument("--quick", action="store_true", help="a tiny net on tiny data (seconds)")
    ap.add_argument("--address", help="a running Ray cluster (default: a local Ray per sweep)")
    ap.add_argument("--num-cpus", type=int, help="slots of the local Ray (default 2 per ticket)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds for both sweeps")
    ap.add_argument("--out", default="bench_branches.json", help="JSON output")
    args = ap.parse_args(argv)
    result = measure_branching(
        args.tickets,
        args.rounds,
        args.epochs,
        args.quick,
        args.address,
        args.num_cpus,
        args.timeout,
    )
    for line in report_lines(result):
        print(line)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if "wall_ratio" in result else 1


if __name__ == "__main__":
    sys.exit(main())
