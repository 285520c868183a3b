"""lth_ray: lottery-ticket ablations as Ray Tune sweeps, recorded in MLflow.

The public API, for notebooks, scripts and plugins:

- `MODELS`, `DATASETS`, `CRITERIA`: the registries a plugin adds to (builder and scorer signatures
  are documented where each registry is defined: `lth_ray.lottery.models`,
  `lth_ray.lottery.datasets.base`, `lth_ray.lottery.pruning`);
- `load_ablation(path, overrides)`: an ablation file read, overridden and validated;
- `run_sweep(path, overrides, ...)`: the whole sweep, returning its id and report folder;
- `build_report(tracking_uri, experiment=..., sweep=...)`: the report of a sweep in MLflow.

Names resolve on first use, so `import lth_ray` (as every Ray worker does) loads nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MODELS": "lth_ray.lottery.models",
    "DATASETS": "lth_ray.lottery.datasets",
    "CRITERIA": "lth_ray.lottery.pruning",
    "load_ablation": "lth_ray.config.load",
    "run_sweep": "lth_ray.sweep.api",
    "SweepResult": "lth_ray.sweep.api",
    "build_report": "lth_ray.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lth_ray' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
