"""`python -m lth_ray.trial ABLATION.yaml`: one trial in this process, no Ray, no MLflow.

Useful to debug a configuration, to reproduce one grid point of a sweep (`--index`), or to run the
science without any infrastructure. Writes rounds.csv, trial.json and round_XX/{masks,final}.pt.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lth_ray.config.errors import ConfigError
from lth_ray.config.grid import expand_trials, trial_key
from lth_ray.config.load import cli_overrides, load_ablation
from lth_ray.lottery.artifacts import write_trial_outputs
from lth_ray.lottery.data import DatasetError, load_dataset
from lth_ray.lottery.trial import LotteryTrial
from lth_ray.specs import TrialConfig, field_docs


def format_round(record: dict[str, Any], rounds_total: int) -> str:
    """The one console line per finished round."""
    skip = "  (skipped: criterion pruned nothing)" if record.get("skipped") else ""
    return (
        f"round {record['round']:2d}/{rounds_total - 1} | remaining {record['weights_remaining']:6.2f}% "
        f"| test acc {100 * record['test_acc']:6.2f}% (final {100 * record['test_acc_final']:6.2f}%) "
        f"| best epoch {record['best_epoch']:3d} | {record['train_seconds']:7.1f} s "
        f"| {record['images_per_s']:8.0f} img/s{skip}"
    )


def select_trial(path: str, overrides: list[str], index: int) -> TrialConfig:
    spec = load_ablation(path, overrides)
    trials = expand_trials(spec)
    if not 0 <= index < len(trials):
        raise ConfigError(
            path,
            "--index",
            f"expected 0 <= index < {len(trials)} (the ablation has {len(trials)} trials)",
        )
    return trials[index]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lth_ray.trial", description=__doc__.splitlines()[0]
    )
    ap.add_argument("ablation", nargs="?", help="ablation YAML file")
    ap.add_argument(
        "--index", type=int, default=0, help="which trial of the expanded grid (see --list)"
    )
    ap.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. prune.rounds=3"
    )
    ap.add_argument(
        "--data-root", help="folder (or archive) holding the dataset; sets dataset.root"
    )
    ap.add_argument("--out", help="output folder (default runs/<ablation>/<trial>)")
    ap.add_argument("--list", action="store_true", help="list the ablation's trials and exit")
    ap.add_argument(
        "--help-config",
        action="store_true",
        help="list every config field with its default and doc",
    )
    args = ap.parse_args(argv)

    if args.help_config:
        for path, default, text in field_docs():
            print(f"{path:32s} {default:22s} {text}")
        return 0
    if not args.ablation:
        ap.error("an ablation file is required")
    try:
        if args.list:
            for i, t in enumerate(
                expand_trials(
                    load_ablation(
                        args.ablation, cli_overrides(args.set, getattr(args, "data_root", None))
                    )
                )
            ):
                print(f"{i:4d}  {trial_key(t)}")
            return 0
        cfg = select_trial(
            args.ablation, cli_overrides(args.set, getattr(args, "data_root", None)), args.index
        )
        t0 = time.perf_counter()
        data = load_dataset(cfg.dataset)
    except (ConfigError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("runs") / cfg.name / trial_key(cfg))
    trial = LotteryTrial(cfg, data)
    print(
        f"{trial_key(cfg)}: {cfg.model.arch} on {cfg.dataset.name} "
        f"({len(data.train_x)}/{len(data.val_x)}/{len(data.test_x)} train/val/test, loaded in "
        f"{time.perf_counter() - t0:.1f} s), device {trial.device} in {trial.runtime['precision']}, {trial.rounds_total} rounds -> {out}"
    )

    def on_round(record: dict[str, Any], t: LotteryTrial) -> None:
        print(format_round(record, t.rounds_total), flush=True)
        write_trial_outputs(out, cfg.to_dict(), t.state, runtime=t.runtime)

    trial.run(on_round)
    print(f"done in {time.perf_counter() - t0:.1f} s: {out / 'rounds.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
