"""Does bf16 (or tf32) cost test accuracy? Dense Conv-4, several seeds per precision, same protocol.

Issue 5's rule: no precision other than fp32 becomes a default until, over >= 5 seeds of dense Conv-4
on the offline CIFAR-10 copy, its mean test accuracy lies within fp32's seed-to-seed spread. Each
(seed, precision) is one dense round 0 of the seed protocol (`LotteryTrial` with no pruning rounds),
run as its own process so that several share the GPU; the dataset is decoded and cached once first.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import queue
import statistics
import time
from typing import Any

import torch

from lth_ray.config import DatasetSpec, ModelSpec, PruneSpec, TrainSpec, TrialConfig, load_ablation


def seed_protocol(
    data_root: str, padding: str = "valid", epochs: int = 26, cache_dir: str | None = None
) -> TrialConfig:
    """The originating study's dense round: Conv-4, Glorot-uniform, Adam 3e-4 eps 1e-7, batch 60."""
    return TrialConfig(
        name="precision_study",
        dataset=DatasetSpec(
            name="image_folder",
            root=data_root,
            val_size=5000,
            split_seed=0,
            scale="unit",
            cache_dir=cache_dir,
        ),
        model=ModelSpec(arch="conv4", padding=padding, init="glorot_uniform"),  # type: ignore[arg-type]
        train=TrainSpec(optimizer="adam", lr=3e-4, eps=1e-7, batch_size=60, initial=f"{epochs}ep"),
        prune=PruneSpec(rounds=0),
    )


def from_ablation(path: str, overrides: list[str]) -> TrialConfig:
    t = load_ablation(path, overrides).base_trial()
    t.prune.rounds = 0
    return t


def _run_one(cfg_dict: dict[str, Any], out: Any) -> None:
    try:
        torch.set_num_threads(1)
        from lth_ray.data import load_dataset
        from lth_ray.lottery import LotteryTrial

        cfg = TrialConfig.from_dict(cfg_dict)
        t0 = time.perf_counter()
        data = load_dataset(cfg.dataset)
        trial = LotteryTrial(cfg, data)
        record = trial.run_round()
        keep = (
            "test_acc",
            "test_acc_final",
            "best_epoch",
            "val_loss_best",
            "val_acc_best",
            "train_seconds",
            "images_per_s",
        )
        result = {k: record[k] for k in keep}
        result.update(
            seed=cfg.seed,
            precision=trial.runtime["precision"],
            wall_s=time.perf_counter() - t0,
        )
        out.put((os.getpid(), result))
    except BaseException as e:
        out.put(
            (
                os.getpid(),
                {
                    "seed": cfg_dict.get("seed"),
                    "precision": cfg_dict["train"]["precision"],
                    "error": f"{type(e).__name__}: {e}",
                },
            )
        )


def summarise(runs: list[dict[str, Any]], reference: str = "fp32") -> dict[str, Any]:
    """Per precision: mean, sample std, min, max of test accuracy; and each one's gap to `reference`."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if "error" not in r:
            by.setdefault(r["precision"], []).append(r)
    stats: dict[str, Any] = {}
    for precision, rs in sorted(by.items()):
        for key in ("test_acc", "test_acc_final"):
            vals = [r[key] for r in sorted(rs, key=lambda r: r["seed"])]
            stats.setdefault(precision, {})[key] = {
                "seeds": [r["seed"] for r in sorted(rs, key=lambda r: r["seed"])],
                "values": vals,
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else float("nan"),
                "min": min(vals),
                "max": max(vals),
            }
    verdicts: dict[str, Any] = {}
    ref = stats.get(reference, {}).get("test_acc")
    for precision, s in stats.items():
        if precision == reference or ref is None:
            continue
        gap = s["test_acc"]["mean"] - ref["mean"]
        n = min(len(s["test_acc"]["values"]), len(ref["values"]))
        verdicts[precision] = {
            "mean_gap": gap,
            "reference_std": ref["std"],
            "within_spread": bool(abs(gap) <= ref["std"]) if n > 1 else None,
            "enough_seeds": n >= 5,
        }
    return {"reference": reference, "stats": stats, "verdicts": verdicts}


def run_study(
    base: TrialConfig,
    seeds: list[int],
    precisions: list[str],
    jobs: int,
    timeout: float = 3600.0,
    log: Any = print,
) -> dict[str, Any]:
    """All (seed, precision) runs, `jobs` at a time; returns the runs and their summary."""
    from lth_ray.data import load_raw

    t0 = time.perf_counter()
    load_raw(base.dataset)  # decode + cache once, before the workers start
    log(f"data ready in {time.perf_counter() - t0:.1f} s")
    configs = []
    for precision in precisions:
        for seed in seeds:
            c = copy.deepcopy(base)
            c.seed, c.train.precision = seed, precision  # type: ignore[assignment]
            configs.append(c.to_dict())
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    pending, running, runs = list(configs), [], []
    deadline = (
        time.monotonic() + timeout - (time.perf_counter() - t0)
    )  # from the start, decoding included
    while pending or running:
        while pending and len(running) < max(1, jobs):
            p = ctx.Process(target=_run_one, args=(pending.pop(0), out), daemon=True)
            p.start()
            running.append(p)
        try:
            pid, result = out.get(timeout=max(1.0, deadline - time.monotonic()))
        except queue.Empty:
            runs.append({"error": f"timed out after {timeout:.0f} s"})
            break
        runs.append(result)
        if "error" in result:
            log(f"  {result['precision']} seed {result['seed']}: {result['error']}")
        else:
            log(
                f"  {result['precision']:>5} seed {result['seed']}: test acc {100 * result['test_acc']:.2f}% "
                f"(final {100 * result['test_acc_final']:.2f}%), best epoch {result['best_epoch']}, "
                f"{result['images_per_s']:.0f} images/s"
            )
        for p in [p for p in running if p.pid == pid]:
            p.join(timeout=30)
            running.remove(p)
    for p in running:
        p.terminate()
    return {
        "runs": runs,
        "summary": summarise(runs),
        "wall_s": time.perf_counter() - t0,
        "config": base.to_dict(),
    }


def format_summary(summary: dict[str, Any]) -> list[str]:
    lines = [
        "precision  seeds  test acc (best-val weights): mean +- std [min, max]   final weights: mean +- std"
    ]
    for precision, s in summary["stats"].items():
        a, f = s["test_acc"], s["test_acc_final"]
        lines.append(
            f"{precision:>9}  {len(a['values']):5d}  {100 * a['mean']:6.2f}% +- {100 * a['std']:.2f} "
            f"[{100 * a['min']:.2f}, {100 * a['max']:.2f}]   {100 * f['mean']:6.2f}% +- {100 * f['std']:.2f}"
        )
    for precision, v in summary["verdicts"].items():
        within = {True: "within", False: "OUTSIDE", None: "n/a"}[v["within_spread"]]
        seeds_note = "" if v["enough_seeds"] else " (fewer than 5 seeds: not conclusive)"
        lines.append(
            f"{precision} - {summary['reference']} mean gap {100 * v['mean_gap']:+.2f} points: {within} "
            f"the {summary['reference']} seed spread (std {100 * v['reference_std']:.2f}){seeds_note}"
        )
    return lines
