"""`python -m lth_ray.report.reproduce docs/results/<name>`: is a published study its own command's?

Re-runs the first rounds of a trial or two of the published ablation in this process (the same
trial configuration, the same seeds, threads per trial as the sweep pinned them) and compares every
per-round number with the published trials.csv, bit for bit. On the CPU with the same code, torch
build, kernels (CPU capability) and threads they are identical; provenance.json says what the study
ran with, and any difference from this machine is printed first, because then the numbers agree
only in distribution. Exit status 0 when every number is identical, 1 when one differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from lth_ray.report.provenance import numerics

COMPARED = (
    "weights_remaining",
    "sparsity",
    "skipped",
    "pruned",
    "best_epoch",
    "best_iteration",
    "val_loss_best",
    "val_acc_best",
    "test_acc",
    "test_loss",
    "test_acc_final",
    "test_loss_final",
)


def published_trials(folder: Path) -> pd.DataFrame:
    path = folder / "trials.csv"
    if not path.is_file():
        raise SystemExit(f"{folder}: no trials.csv (a folder written by lth_ray.report.publish)")
    # the float64 that was written, exactly: pandas >= 3 parses so by default (and deprecates the
    # option); before it, only the round_trip parser did
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    return pd.read_csv(path, **exact)


def ablation_file(folder: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    found = sorted(folder.glob("*.yaml"))
    if len(found) != 1:
        raise SystemExit(f"{folder}: expected one ablation .yaml, found {len(found)} (--ablation)")
    return found[0]


def default_trials(keys: list[str], table: pd.DataFrame) -> list[str]:
    """The first ticket and the first control of the grid that the study published."""
    have = set(table["trial"])
    ticket = next((k for k in keys if k in have and "-" not in k.split("-s", 1)[-1]), None)
    control = next((k for k in keys if k in have and k.startswith(f"{ticket}-")), None)
    picked = [k for k in (ticket, control) if k]
    return picked or [k for k in keys if k in have][:1]


def compare_round(key: str, record: dict, row: pd.Series) -> list[str]:
    """'metric: reran 0.8659 != published 0.8592' for every number that is not identical."""
    out = []
    for m in COMPARED:
        if m not in record or m not in row or pd.isna(row[m]):
            continue
        got, want = float(record[m]), float(row[m])
        if got != want:
            out.append(f"{key} round {record['round']} {m}: reran {got!r} != published {want!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lth_ray.report.reproduce", description=__doc__)
    ap.add_argument("folder", help="a published study, e.g. docs/results/fashion_lenet")
    ap.add_argument("--trial", action="append", help="trial key(s) (default: a ticket, a control)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds to re-run per trial (default 2)")
    ap.add_argument("--data-root", help="folder holding the dataset; sets dataset.root")
    ap.add_argument("--ablation", help="the ablation file (default: the folder's .yaml)")
    ap.add_argument("--threads", type=int, help="torch threads (default: as the study recorded)")
    args = ap.parse_args(argv)

    import torch

    from lth_ray.config.grid import expand_trials, trial_key
    from lth_ray.config.load import load_ablation
    from lth_ray.lottery.data import load_dataset
    from lth_ray.lottery.trial import LotteryTrial

    folder = Path(args.folder)
    table = published_trials(folder)
    prov_path = folder / "provenance.json"
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    recorded = prov.get("numerics", {})
    overrides = [f"dataset.root={args.data_root}"] if args.data_root else []
    spec = load_ablation(str(ablation_file(folder, args.ablation)), overrides)
    threads = args.threads or int(
        recorded.get("threads_per_trial") or max(1, int(spec.resources.cpu))
    )
    torch.set_num_threads(threads)
    here = numerics(threads)
    print(f"code: study ran commit {prov.get('code', {}).get('commit', 'unknown (not recorded)')}")
    for k in ("threads_per_trial", "torch", "cpu_capability", "env"):
        if k in recorded and recorded[k] != here.get(k):
            print(f"differs from the study: {k} here {here.get(k)!r}, study {recorded[k]!r}"
                  " (expect agreement in distribution, not bit for bit)")  # fmt: skip
    configs = {trial_key(t): t for t in expand_trials(spec)}
    keys = args.trial or default_trials(list(configs), table)
    unknown = [k for k in keys if k not in configs or k not in set(table["trial"])]
    if unknown:
        raise SystemExit(f"--trial {', '.join(unknown)}: not a published trial of {folder}")
    problems, compared = [], 0
    data = {}
    for key in keys:
        cfg = configs[key]
        ds = repr(cfg.dataset)  # trials of one dataset config share one load
        if ds not in data:
            data[ds] = load_dataset(cfg.dataset)
        trial = LotteryTrial(cfg, data[ds])
        rows = table[table["trial"] == key].set_index("round")
        for _ in range(min(args.rounds, trial.rounds_total)):
            record = trial.run_round()
            r = int(record["round"])
            if r not in rows.index:
                problems.append(f"{key} round {r}: not in the published trials.csv")
                continue
            diff = compare_round(key, record, rows.loc[r])
            problems += diff
            compared += 1
            state = "identical" if not diff else f"{len(diff)} number(s) differ"
            print(f"{key} round {r}: test acc {100 * record['test_acc']:.2f}% — {state}")
    for p in problems:
        print(p)
    verdict = "bit-identical" if not problems else "NOT identical"
    print(f"{compared} round(s) of {len(keys)} trial(s) re-run with {threads} thread(s): {verdict}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
