"""Files a trial leaves behind: rounds.csv, trial.json, and each round's masks and final weights."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from lth_ray.lottery.pruning import Masks
from lth_ray.lottery.train import StateDict
from lth_ray.lottery.trial import TrialState

FIRST_COLUMNS = [
    "round",
    "sparsity",
    "weights_remaining",
    "test_acc",
    "test_loss",
    "best_epoch",
    "skipped",
]


def rounds_columns(history: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for record in history:
        keys += [k for k in record if k not in keys]
    return [c for c in FIRST_COLUMNS if c in keys] + [k for k in keys if k not in FIRST_COLUMNS]


def write_rounds_csv(history: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rounds_columns(history))
        writer.writeheader()
        writer.writerows(history)
    return path


def write_trial_json(
    path: str | Path,
    config: dict[str, Any],
    history: list[dict[str, Any]],
    curves: list[list[dict[str, float]]],
    **extra: Any,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": config, "rounds": history, "epochs": curves, **extra}
    path.write_text(json.dumps(payload, indent=2))
    return path


def save_round(
    out_dir: str | Path, round_index: int, masks: Masks, final: StateDict | None
) -> Path:
    """Masks (bool) and the round's final weights, as torch files under round_XX/."""
    folder = Path(out_dir) / f"round_{round_index:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in masks.items()}, folder / "masks.pt")
    if final is not None:
        torch.save({k: v.cpu() for k, v in final.items()}, folder / "final.pt")
    return folder


def write_trial_outputs(
    out_dir: str | Path, config: dict[str, Any], state: TrialState, **runtime: Any
) -> None:
    """rounds.csv and trial.json of all rounds so far, plus the latest round's masks and weights.

    `runtime`: what the configuration left to the machine (device, precision), kept in trial.json.
    """
    out_dir = Path(out_dir)
    save_round(out_dir, state.rounds_done - 1, state.masks, state.last_final)
    write_rounds_csv(state.history, out_dir / "rounds.csv")
    write_trial_json(out_dir / "trial.json", config, state.history, state.curves, **runtime)
