"""How long each round trains and where it rewinds to: the one rule the config, the trial and the
sweep's plan all apply.

Lengths are step strings, '26ep' or '25000it'; a rewind point is 'init' or a step string k. Round 0
trains `train.initial` (T0) and captures the weights at k; every later round trains `train.retrain`
(T), or T - k under `prune.rewind_budget: remaining` (the papers' late rewinding: the retrained net
ends at step T like the dense one). Epochs and iterations mix freely; converting between them needs
the iterations per epoch, i.e. the training set's size, which is known once the data is (or when a
registered shape fixes it, `--dry-run` included).
"""

from __future__ import annotations

import math
import re

from lth_ray.specs import TrainSpec, TrialConfig

Steps = tuple[int, str]  # (n, 'ep' | 'it')

_STEPS = re.compile(r"^(\d+)(ep|it)$")


def parse_steps(value: str) -> Steps:
    """'26ep' -> (26, 'ep'); '25000it' -> (25000, 'it')."""
    m = _STEPS.match(str(value).strip())
    if not m:
        raise ValueError(f"expected '<n>ep' or '<n>it', got {value!r}")
    return int(m.group(1)), m.group(2)


def parse_rewind(value: str) -> Steps | None:
    """'init' -> None; '2ep' / '500it' -> (k, unit)."""
    if str(value).strip() == "init":
        return None
    return parse_steps(value)


def batches_per_epoch(n_train: int, spec: TrainSpec) -> int:
    if spec.drop_last:
        return max(n_train // spec.batch_size, 1)
    return math.ceil(n_train / spec.batch_size)


def steps_to_iterations(steps: Steps, per_epoch: int) -> int:
    n, unit = steps
    return n * per_epoch if unit == "ep" else n


def round_steps(cfg: TrialConfig, r: int, n_train: int) -> Steps:
    """Training length of round r: `initial` for round 0, `retrain` after; under late rewinding
    with `rewind_budget: remaining`, the T - k steps left after the rewind point k."""
    if r == 0:
        return parse_steps(cfg.train.initial)
    total = parse_steps(cfg.train.retrain)
    k = parse_rewind(cfg.prune.rewind)
    if k is None or cfg.prune.rewind_budget == "full":
        return total
    if k[1] == total[1]:
        return total[0] - k[0], total[1]
    per_epoch = batches_per_epoch(n_train, cfg.train)
    return steps_to_iterations(total, per_epoch) - steps_to_iterations(k, per_epoch), "it"


def steps_epochs(cfg: TrialConfig, steps: Steps, n_train: int | None) -> float:
    """Steps in epochs, for planning; with the training set's size unknown, iterations count as
    epochs (the plan then says what it was given)."""
    per_epoch = None if n_train is None else batches_per_epoch(max(n_train, 1), cfg.train)
    n, unit = steps
    return float(n) if unit == "ep" or not per_epoch else n / per_epoch


def branch_steps(cfg: TrialConfig, level: int, k: Steps, n_train: int) -> Steps:
    """How long a branch from step k trains: to the end of the round it branches from (T - k),
    round 0's `train.initial` for the dense net (level 0), `train.retrain` under a level's mask."""
    total = parse_steps(cfg.train.initial if level == 0 else cfg.train.retrain)
    if k[1] == total[1]:
        return total[0] - k[0], total[1]
    per_epoch = batches_per_epoch(n_train, cfg.train)
    return steps_to_iterations(total, per_epoch) - steps_to_iterations(k, per_epoch), "it"


def round_epochs(cfg: TrialConfig, n_train: int | None) -> tuple[float, float]:
    """(round 0, each later round) in epochs, for planning; with the training set's size unknown,
    iterations count as epochs (the plan then says what it was given)."""

    def epochs(steps: Steps) -> float:
        return steps_epochs(cfg, steps, n_train)

    first = epochs(parse_steps(cfg.train.initial))
    later = epochs(parse_steps(cfg.train.retrain))
    k = parse_rewind(cfg.prune.rewind)
    if k is not None and cfg.prune.rewind_budget == "remaining":
        later -= epochs(k)
    return first, later


def schedule_problem(cfg: TrialConfig, n_train: int | None = None) -> tuple[str, str] | None:
    """(field, message) when the rewind point is malformed or does not fit the training lengths.

    Without the training set's size only lengths in the same unit are compared; with it, any
    (a '5000it' rewind point against a '2ep' round 0), at the iterations per epoch it gives."""
    p, t = cfg.prune, cfg.train
    try:
        k = parse_rewind(p.rewind)
    except ValueError as e:
        return "prune.rewind", f"expected 'init', '<k>ep' or '<k>it', got {p.rewind!r} ({e})"
    if k is None:
        return None
    first, total = parse_steps(t.initial), parse_steps(t.retrain)
    retrains = p.rounds > 0 and p.rewind_budget == "remaining"
    if n_train is None:
        at, t0, later, where = k[0], first[0], total[0], ""
        beyond = k[1] == first[1] and at > t0
        nothing_left = retrains and k[1] == total[1] and at >= later
    else:
        per_epoch = batches_per_epoch(n_train, t)
        at = steps_to_iterations(k, per_epoch)
        t0 = steps_to_iterations(first, per_epoch)
        where = f" ({at} iterations; round 0 is {t0} at {per_epoch} per epoch)"
        beyond = at > t0
        nothing_left = retrains and round_steps(cfg, 1, n_train)[0] < 1
    if beyond:
        return "prune.rewind", (
            f"rewind point {p.rewind!r} lies beyond round 0's training ({t.initial!r}){where}"
        )
    if nothing_left:
        return "prune.rewind", (
            f"rewind point {p.rewind!r} leaves no training in later rounds (train.retrain "
            f"{t.retrain!r}, prune.rewind_budget 'remaining'): rewind earlier or retrain longer"
        )
    return None
