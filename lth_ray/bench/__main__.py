"""`python -m lth_ray.bench`: throughput table and ratios (default), `--check`, `--precision-study`."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m lth_ray.bench", description=__doc__)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="fast path vs plain loop, one round each from the same state (needs CUDA to check the graph)",
    )
    mode.add_argument(
        "--precision-study",
        action="store_true",
        help="dense Conv-4 test accuracy over seeds per precision (seed protocol)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="small and short: under a minute on a 2-core CPU"
    )
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument(
        "--out", help="JSON output (default bench.json, or precision_study.json / check.json)"
    )
    g = ap.add_argument_group("throughput")
    g.add_argument("--seconds", type=float, help="seconds per measurement")
    g.add_argument("--packed", help="trials per device to measure, e.g. 1,4,8,16")
    g.add_argument("--vmap", help="models per vectorised program to measure, e.g. 8,32 ('' = none)")
    g.add_argument(
        "--streams", help="graphed programs on CUDA streams of one process, e.g. 8,16 ('' = none)"
    )
    g.add_argument(
        "--precisions", help="single-trial precisions, e.g. fp32,tf32,bf16 (also the study's list)"
    )
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
    s = ap.add_argument_group("precision study")
    s.add_argument(
        "--data-root", help="CIFAR-10 as an image folder or its .tar.xz (dataset image_folder)"
    )
    s.add_argument(
        "--ablation", help="take the trial from this ablation instead (dense round only)"
    )
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --ablation: override a field",
    )
    s.add_argument("--seeds", default="0,1,2,3,4")
    s.add_argument("--epochs", type=int, default=26)
    s.add_argument("--padding", default="valid", choices=["valid", "same"])
    s.add_argument("--jobs", type=int, help="runs at once (default: all of them on CUDA, 1 on CPU)")
    s.add_argument("--cache-dir", help="where the decoded dataset is cached")
    s.add_argument(
        "--timeout", type=float, default=560.0, help="stop waiting for runs after this many seconds"
    )
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
    _write(args.out or "bench.json", result)
    return 0


def main_check(args: argparse.Namespace) -> int:
    from lth_ray.bench.check import format_check, run_checks

    device = resolve(args.device)
    torch.set_num_threads(args.threads or 1)
    if device.type != "cuda":
        print(
            "note: no CUDA device: checks the eager fast path against the plain loop, not the graph"
        )
    precisions = tuple(_names(args.precisions)) if args.precisions else ("fp32", "tf32", "bf16")
    t0 = time.perf_counter()
    results = run_checks(device, precisions)
    for r in results:
        print(format_check(r))
    print(f"elapsed {time.perf_counter() - t0:.1f} s")
    _write(
        args.out or "check.json",
        {"device": str(device), "torch": torch.__version__, "checks": results},
    )
    return 0 if all(r["ok"] for r in results) else 1


def main_study(args: argparse.Namespace) -> int:
    from lth_ray.bench.precision import format_summary, from_ablation, run_study, seed_protocol

    if args.ablation:
        base = from_ablation(
            args.ablation, args.set + ([f"dataset.root={args.data_root}"] if args.data_root else [])
        )
    elif args.data_root:
        base = seed_protocol(args.data_root, args.padding, args.epochs, args.cache_dir)
    else:
        print(
            "error: --precision-study needs --data-root (CIFAR-10 image folder or .tar.xz) or --ablation",
            file=sys.stderr,
        )
        return 2
    if args.cache_dir:
        base.dataset.cache_dir = args.cache_dir
    seeds = _ints(args.seeds)
    precisions = _names(args.precisions) if args.precisions else ["fp32", "bf16"]
    jobs = args.jobs or (len(seeds) * len(precisions) if torch.cuda.is_available() else 1)
    print(
        f"precision study: {precisions} x seeds {seeds}, {base.train.initial} dense, padding {base.model.padding}, {jobs} at a time"
    )
    result = run_study(base, seeds, precisions, jobs, timeout=args.timeout)
    for line in format_summary(result["summary"]):
        print(line)
    print(f"elapsed {result['wall_s']:.1f} s")
    result["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result["torch"] = torch.__version__
    _write(args.out or "precision_study.json", result)
    return 0 if all("error" not in r for r in result["runs"]) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lth_ray.mps import MpsError, mps_daemon

    try:
        with mps_daemon(args.mps) as started:
            if started:
                print("CUDA MPS daemon started for this run (stopped at its end)")
            if args.check:
                return main_check(args)
            if args.precision_study:
                return main_study(args)
            return main_bench(args)
    except MpsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
