"""The Ray Tune trainable: glue between one LotteryTrial, its state in the sweep's storage and its
MLflow run.

After every finished round it saves the trial state (with the child run id) to the sweep's storage
(`SweepStore`), logs the round to MLflow and reports the round's metrics to Tune. A trial started
again, by a retry or by `--resume`, restores that state and continues at the next round, in the same
child run. A trial that cannot start because of its configuration or data reports the error instead
of raising it, so the sweep stops at once rather than retrying it. A control streams behind its
ticket: before each level it waits (at most `level_wait_s`) for the ticket's mask of that level; if
it is not there by then, it reports the level it waits for and ends this Tune trial, so the slot
goes to other work, and the searcher starts it again, from its saved state, once it is.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from lth_ray import schema
from lth_ray.config.errors import ConfigError
from lth_ray.config.grid import trial_key
from lth_ray.config.load import trial_from_dict
from lth_ray.config.plugins import import_plugins
from lth_ray.lottery.artifacts import write_trial_outputs
from lth_ray.lottery.data import DatasetError, load_dataset
from lth_ray.lottery.schedule import parse_rewind, parse_steps
from lth_ray.lottery.trial import LotteryTrial
from lth_ray.specs import TrialConfig
from lth_ray.sweep.energy import EnergyMeter
from lth_ray.sweep.plan import SweepSettings, Unit, from_tune_config
from lth_ray.sweep.progress import CONFIG_ERROR_KEY, UNIT_DONE_KEY, UNIT_WAITING_KEY
from lth_ray.sweep.store import SweepStore
from lth_ray.sweep.tracking import SweepContext, TrialRun, log_pair, pair_run

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

FAULT_ENV = "LTH_RAY_FAULT"  # "<trial key>@<round>": die (os._exit) when that round starts ...
FAULT_MARKER_ENV = "LTH_RAY_FAULT_MARKER"  # ... once: the marker file records that it happened


def maybe_inject_fault(key: str, round_index: int) -> None:
    """Test hook: simulate a killed worker process at the start of a given round, on the first attempt."""
    spec = os.environ.get(FAULT_ENV)
    marker = os.environ.get(FAULT_MARKER_ENV)
    if not spec or not marker:
        return
    target, _, at = spec.rpartition("@")
    if target == key and int(at) == round_index and not Path(marker).exists():
        Path(marker).write_text(f"{key} killed at round {round_index}\n")
        os._exit(17)


def report_metrics(record: dict[str, Any], trial: LotteryTrial) -> dict[str, Any]:
    metrics = {k: v for k, v in record.items() if isinstance(v, int | float) and "/" not in k}
    metrics["rounds_done"] = trial.state.rounds_done
    metrics["rounds_total"] = trial.rounds_total
    return metrics


def log_masks(run: TrialRun, trial: LotteryTrial) -> None:
    """The masks of the trial's newest round, as artifact masks/round_XX.pt."""
    with tempfile.TemporaryDirectory() as folder:
        masks = {k: v.cpu() for k, v in trial.state.masks.items()}
        torch.save(masks, Path(folder) / f"round_{trial.state.rounds_done - 1:02d}.pt")
        run.log_artifacts(folder, "masks")


def start_unit(unit: Unit, settings: SweepSettings) -> tuple[TrialConfig, LotteryTrial] | None:
    """What every unit does first: pin its threads, import the ablation's plugins, read its trial,
    load its data, build the trial.

    A config or data error is reported to Tune instead of raised (retrying cannot help); then None."""
    torch.set_num_threads(settings.threads)
    try:
        import_plugins(settings.plugins)
        cfg = trial_from_dict(unit.trial)
        return cfg, LotteryTrial(cfg, load_dataset(cfg.dataset))
    except (ValueError, DatasetError, ConfigError) as e:
        tune.report({CONFIG_ERROR_KEY: f"{type(e).__name__}: {e}"})
        return None


def trunk_unit(unit: Unit, settings: SweepSettings) -> None:
    """Train a dense round 0 once (every rewind point its trials need) and hand it on."""
    store = SweepStore(settings.root)
    seconds = 0.0
    if not store.has_trunk(unit.id):
        started = start_unit(unit, settings)
        if started is None:
            return
        _, trial = started
        maybe_inject_fault(unit.id, 0)
        t0 = time.perf_counter()
        store.save_trunk(unit.id, trial.train_trunk(list(unit.rewinds)))  # for all its trials
        seconds = time.perf_counter() - t0
    tune.report({UNIT_DONE_KEY: 1, "unit_seconds": seconds, "shared_by": unit.shared_by})


def pair_start(
    unit: Unit, trial: LotteryTrial, store: SweepStore | None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(W_k, mask) of an instability pair: from its trunk and its ticket's published level, or,
    unshared, computed here the same way (round 0 capturing k, then the ticket's levels)."""
    k, level = parse_steps(unit.analysis["k"]), int(unit.analysis["level"])
    if store is not None:
        trunk = store.load_trunk(unit.trunk)
        if trunk is None:
            raise RuntimeError(f"trunk {unit.trunk} is not in the sweep's storage")
        if not level:
            return trunk.rewinds[k], trial.state.masks
        published = store.load_level(unit.analysis["ticket"], level)
        if published is None:
            raise RuntimeError(f"ticket {unit.analysis['ticket']} has no level {level} in storage")
        return trunk.rewinds[k], published["masks"]
    own = parse_rewind(trial.cfg.prune.rewind)
    trunk = trial.train_trunk(sorted({k} | ({own} if own else set())))
    if level:
        trial.start_from_trunk(trunk)
        while trial.state.rounds_done <= level:
            trial.run_round()
    return trunk.rewinds[k], trial.state.masks


def instability_unit(unit: Unit, settings: SweepSettings) -> None:
    """One noise pair of the instability analysis, logged as its own child run."""
    started = start_unit(unit, settings)
    if started is None:
        return
    cfg, trial = started
    a = unit.analysis
    ctx = SweepContext(**settings.ctx)
    name = unit.id
    tags = {
        schema.TAG_LMC_K: str(a["k"]),
        schema.TAG_LMC_LEVEL: str(a["level"]),
        schema.TAG_LMC_PAIR: str(a["pair"]),
        schema.TAG_LMC_TICKET: str(a.get("ticket", "")),
    }
    run_id = pair_run(ctx, cfg, name, tags, {"analysis": a, "trial": cfg.to_dict()})
    store = SweepStore(settings.root) if settings.shared else None
    w_k, masks = pair_start(unit, trial, store)
    result = trial.instability_pair(
        w_k,
        masks,
        str(a["k"]),
        int(a["level"]),
        int(a["pair"]),
        int(a["points"]),
        int(a["train_subset"]),
        str(a["batchnorm"]),
    )
    metrics = result.metrics()
    names = trial.names  # the prunable layers, as the trials' weights_remaining counts them
    remaining = sum(int(masks[n].sum()) for n in names) / sum(masks[n].numel() for n in names)
    metrics["weights_remaining"] = 100.0 * remaining
    metrics["stable_test"] = float(metrics["instability_test"] < float(a["threshold"]))
    log_pair(ctx, run_id, metrics, result.path.error, {schema.TAG_LMC_BATCHNORM: result.bn})
    tune.report({UNIT_DONE_KEY: 1, **metrics})


def publish_level(store: SweepStore, key: str, trial: LotteryTrial) -> None:
    """A ticket's mask and record at its newest level, for the controls and pairs that branch from
    it; at level 1 also its curve and final weights, which are the one-shot baseline's level 1."""
    level = trial.state.rounds_done - 1
    data: dict[str, Any] = {
        "masks": {k: v.cpu() for k, v in trial.state.masks.items()},
        "record": trial.state.history[-1],
        "kept": trial.pruned_from if trial.cfg.prune.retrain_mode != "weight_rewind" else None,
    }
    if level == 1:
        data["curve"], data["final"] = trial.state.curves[-1], trial.state.last_final
    store.save_level(key, level, data)


def level_ready(store: SweepStore, unit: Unit, r: int, wait_s: float) -> bool:
    """Whether the level a streaming unit trains next exists, after waiting up to wait_s for it."""
    deadline = time.monotonic() + wait_s
    while not store.has_level(unit.masks_from, r):
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(1.0, max(wait_s / 20, 0.05)))
    return True


def next_round(trial: LotteryTrial, unit: Unit, store: SweepStore | None) -> dict[str, Any]:
    """The trial's next round: from its trunk (round 0, shared), from its ticket's mask (a control's
    level, shared), or computed here (sharing off, or work no other unit does)."""
    r = trial.state.rounds_done
    if store is not None and r == 0 and unit.trunk:
        trunk = store.load_trunk(unit.trunk)
        if trunk is None:
            raise RuntimeError(f"trunk {unit.trunk} is not in the sweep's storage")
        return trial.start_from_trunk(trunk)
    if store is not None and r == 1 and unit.level1_from:
        level = store.load_level(unit.level1_from, 1)
        if level is None or "final" not in level:
            raise RuntimeError(f"ticket {unit.level1_from} has no level 1 in storage")
        return trial.adopt_level(level["masks"], level["record"], level["curve"], level["final"])
    if store is not None and r > 0 and unit.masks_from:
        level = store.load_level(unit.masks_from, r)
        if level is None:
            raise RuntimeError(f"ticket {unit.masks_from} has no level {r} in storage")
        return trial.run_control_round(level["masks"], level["record"], level.get("kept"))
    return trial.run_round()


def lottery_trainable(config: dict[str, Any]) -> None:
    unit, settings = from_tune_config(config)
    if unit.kind == "trunk":
        trunk_unit(unit, settings)
        return
    if unit.kind == "instability":
        instability_unit(unit, settings)
        return
    ctx = SweepContext(**settings.ctx)
    store = SweepStore(settings.root)
    shared = store if settings.shared else None
    started = start_unit(unit, settings)
    if started is None:
        return
    cfg, trial = started
    key = trial_key(cfg)
    try:
        saved = store.load_state(key)
        if saved is not None:
            trial.restore(saved["trial"])
    except ValueError as e:  # a state of another configuration: not a fault, no retry
        tune.report({CONFIG_ERROR_KEY: f"{type(e).__name__}: {e}"})
        return
    run_id = saved["mlflow_run_id"] if saved else None
    energy_before = saved.get("energy_wh", 0.0) if saved else 0.0

    run = TrialRun(ctx, cfg, trial.data.num_classes, run_id)
    run.set_tags(
        {
            schema.TAG_DEVICE: trial.runtime["device"],
            schema.TAG_PRECISION: trial.runtime["precision"],
        }
    )
    run.start_system_metrics()
    meter = EnergyMeter()
    # Rounds already saved but missing in MLflow (died between the two writes) are logged now; the
    # newest saved round's masks are written again (the same file) in case they were not.
    epochs_before = 0
    for record, curve in zip(trial.state.history, trial.state.curves):
        run.log_round(record, curve, epochs_before)
        epochs_before += len(curve)
    if trial.state.history:
        log_masks(run, trial)

    try:
        if (
            trial.done and trial.state.history
        ):  # finished before a restart: Tune still needs its result
            tune.report(report_metrics(trial.state.history[-1], trial))
        while not trial.done:
            r = trial.state.rounds_done
            if (
                shared is not None
                and unit.masks_from
                and r > 0
                and not level_ready(shared, unit, r, settings.level_wait_s)
            ):
                tune.report({UNIT_WAITING_KEY: r})
                run.pause()
                return
            maybe_inject_fault(key, trial.state.rounds_done)
            t0 = time.perf_counter()
            record = next_round(trial, unit, shared)
            t_round = time.perf_counter()
            record["round_seconds"] = t_round - t0
            if unit.publish_masks and shared is not None:  # before the state: never skipped
                publish_level(shared, key, trial)
            energy = energy_before + (meter.wh() or 0.0)
            store.save_state(
                key, {"trial": trial.checkpoint(), "mlflow_run_id": run.run_id, "energy_wh": energy}
            )
            curve = trial.state.curves[-1]
            if record["round"] == 0 and unit.trunk and shared is not None:
                run.set_tags({schema.TAG_ROUND0_UNIT: unit.trunk})
            if record["round"] == 1 and unit.masks_from and shared is not None:
                run.set_tags({schema.TAG_MASKS_FROM: unit.masks_from})
            if record["round"] == 1 and unit.level1_from and shared is not None:
                run.set_tags({schema.TAG_LEVEL1_FROM: unit.level1_from})
            run.log_round(record, curve, epochs_before)
            epochs_before += len(curve)
            log_masks(run, trial)
            tune.report(report_metrics(record, trial))
            # What this round cost beyond its own work: the saved state, MLflow writes, Tune's report.
            run.log_metric(
                schema.BOOKKEEPING_METRIC, time.perf_counter() - t_round, step=int(record["round"])
            )
        if meter.available:
            run.log_metric("energy_wh", energy_before + (meter.wh() or 0.0))
        with tempfile.TemporaryDirectory() as folder:
            write_trial_outputs(folder, cfg.to_dict(), trial.state, runtime=trial.runtime)
            run.log_artifacts(folder)
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")
