"""`python -m lth_ray.bench`: images/s of the training step, one and packed trials, with ratios."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m lth_ray.bench", description=__doc__)
    ap.add_argument(
        "--quick", action="store_true", help="small and short: under a minute on a 2-core CPU"
    )
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out", default="bench.json", help="JSON output (default bench.json)")
    g = ap.add_argument_group("throughput")
    g.add_argument("--seconds", type=float, help="seconds per measurement")
    g.add_argument("--packed", help="trials per device to measure, e.g. 1,4,8,16")
    g.add_argument("--vmap", help="models per vectorised program to measure, e.g. 8,32 ('' = none)")
    g.add_argument(
        "--streams", help="graphed programs on CUDA streams of one process, e.g. 8,16 ('' = none)"
    )
    g.add_argument("--precisions", help="single-trial precisions, e.g. fp32,tf32,bf16")
    g.add_argument("--width", type=float, help="Conv-4 width multiplier")
    g.add_argument("--n-train", type=int, help="training images resident per trial")
    g.add_argument("--ceiling-batch", type=int, help="batch size of the ceiling")
    g.add_argument(
        "--threads",
        type=int,
        help="CPU threads per trial (default 1, as a sweep trial with resources.cpu: 1)",
    )
    g.add_argument(
        "--budget", type=float, help="seconds for the whole run (default 480 on CUDA, 50 quick)"
    )
    g.add_argument(
        "--sweep-reserve", type=float, help="seconds of the budget kept for the overhead sweep"
    )
    g.add_argument(
        "--mps",
        action="store_true",
        help="run a CUDA MPS daemon for this run (unless one runs), started before any CUDA work",
    )
    g.add_argument("--no-sweep", action="store_true", help="skip the Ray + MLflow overhead sweep")
    g.add_argument("--sweep-trials", type=int)
    g.add_argument("--sweep-epochs", type=int)
    g.add_argument("--sweep-rounds", type=int)
    g.add_argument("--sweep-gpu", type=float, help="GPU fraction per sweep trial (CUDA only)")
    return ap.parse_args(argv)


def resolve(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is visible")
    return torch.device(name)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _write(path: str, data: dict[str, Any]) -> None:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    Path(path).write_text(json.dumps(clean(data), indent=2, default=str) + "\n")
    print(f"wrote {path}")


def main_bench(args: argparse.Namespace) -> int:
    from lth_ray.bench.suite import Plan, report_lines, run

    device = resolve(args.device)
    plan = Plan.for_device(device, args.quick)
    for attr, value in (
        ("seconds", args.seconds),
        ("width", args.width),
        ("n_train", args.n_train),
        ("ceiling_batch", args.ceiling_batch),
        ("sweep_trials", args.sweep_trials),
        ("sweep_epochs", args.sweep_epochs),
        ("sweep_rounds", args.sweep_rounds),
        ("sweep_gpu", args.sweep_gpu),
        ("threads", args.threads),
        ("budget_s", args.budget),
        ("sweep_reserve_s", args.sweep_reserve),
    ):
        if value is not None:
            setattr(plan, attr, value)
    if args.packed is not None:
        plan.packed = _ints(args.packed)
    if args.vmap is not None:
        plan.vmap = _ints(args.vmap)
    if args.streams is not None:
        plan.streams = _ints(args.streams)
    if args.precisions:
        plan.precisions = _names(args.precisions)
    plan.sweep = not args.no_sweep
    result = run(plan)
    print()
    for line in report_lines(result):
        print(line)
    print(f"elapsed {result['elapsed_s']:.1f} s")
    _write(args.out, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lth_ray.sweep.mps import MpsError, mps_daemon

    try:
        with mps_daemon(args.mps) as started:
            if started:
                print("CUDA MPS daemon started for this run (stopped at its end)")
            return main_bench(args)
    except MpsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
