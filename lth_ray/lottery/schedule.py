"""How long each round trains and where it rewinds to: the one rule the config, the trial and the
sweep's plan all apply.

Lengths are step strings, '26ep' or '25000it'; a rewind point is 'init' or a step string k. Round 0
trains `train.initial` (T0) and captures the weights at k; every later round trains `train.retrain`
(T), or T - k under `prune.rewind_budget: remaining` (the papers' late rewinding: the retrained net
ends at step T like the dense one). Epochs and iterations mix freely; converting between them needs
the iterations per epoch, i.e. the training set's size, which is known once the data is (or when a
registered shape fixes it, `--dry-run` included).

The learning rate is a pure function of the step within a round's schedule (`lr_function`): linear
warmup, then step decay at `train.milestones` or a cosine to zero at the round's full length T.
Every round restarts the schedule; a round that starts at the rewind point k (weight or learning
rate rewinding, open_lth's `train(start_step=k)`) reads it from step k on, and its data order and
augmentation continue from step k of the round's own stream. Fine-tuning trains at the schedule's
final learning rate, the one of step T - 1.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable

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


# ----------------------------------------------------------------------------------------------
# The learning-rate schedule.


def is_constant_lr(t: TrainSpec) -> bool:
    """No warmup, no milestones, no cosine: every step at `train.lr` (what Adam supports)."""
    return parse_steps(t.warmup)[0] == 0 and not t.milestones and t.lr_schedule == "step"


def lr_function(t: TrainSpec, per_epoch: int, horizon: int) -> Callable[[int], float]:
    """step -> learning rate of a schedule `horizon` iterations long (the round's full length T).

    Warmup multiplies by min(1, step / W) (so step 0 trains at lr 0, as open_lth's LambdaLR does);
    step decay by gamma ** (milestones <= step); cosine by (1 + cos(pi * min(1, (step - W) /
    (T - W)))) / 2 after the warmup.
    """
    warm = steps_to_iterations(parse_steps(t.warmup), per_epoch)
    marks = sorted(steps_to_iterations(parse_steps(m), per_epoch) for m in t.milestones)
    span = max(horizon - warm, 1)

    def lr_at(step: int) -> float:
        lr = t.lr * (min(1.0, step / warm) if warm > 0 else 1.0)
        if t.lr_schedule == "cosine":
            frac = min(max(step - warm, 0) / span, 1.0)
            return lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        return lr * t.gamma ** bisect.bisect_right(marks, step)

    return lr_at


def round_start(cfg: TrialConfig, r: int, n_train: int) -> int:
    """The step of its schedule (and of its data stream) a round starts at: k for the later rounds
    of a trial with a rewind point k, else 0."""
    k = parse_rewind(cfg.prune.rewind)
    if r == 0 or k is None:
        return 0
    return steps_to_iterations(k, batches_per_epoch(n_train, cfg.train))


def learning_rates(cfg: TrialConfig, r: int, n_train: int) -> list[float]:
    """The learning rate of every step round r trains, in order.

    Round 0 and weight / learning-rate rewinding: the schedule of length T (train.initial for round
    0, train.retrain after) from `round_start` on. Fine-tuning: the schedule's final learning rate,
    lr(T - 1), for every step."""
    t = cfg.train
    per_epoch = batches_per_epoch(n_train, t)
    n = steps_to_iterations(round_steps(cfg, r, n_train), per_epoch)
    horizon = steps_to_iterations(parse_steps(t.initial if r == 0 else t.retrain), per_epoch)
    lr_at = lr_function(t, per_epoch, horizon)
    if r > 0 and cfg.prune.retrain_mode == "finetune":
        return [lr_at(horizon - 1)] * n
    start = round_start(cfg, r, n_train)
    return [lr_at(start + i) for i in range(n)]


def lr_schedule_problem(t: TrainSpec) -> tuple[str, str] | None:
    """(field, message) when the learning-rate schedule is malformed or asks what the optimizer
    cannot do."""
    try:
        parse_steps(t.warmup)
    except ValueError as e:
        return "train.warmup", str(e)
    if not isinstance(t.milestones, list):
        return "train.milestones", f"expected a list of '<n>ep' / '<n>it', got {t.milestones!r}"
    for i, m in enumerate(t.milestones):
        try:
            n, _ = parse_steps(m)
        except ValueError as e:
            return f"train.milestones[{i}]", str(e)
        if n < 1:
            return f"train.milestones[{i}]", f"expected a step after the start, got {m!r}"
    if not 0 < t.gamma <= 1:
        return "train.gamma", f"expected a factor in (0, 1], got {t.gamma}"
    if t.lr_schedule == "cosine" and t.milestones:
        return "train.milestones", "a cosine schedule has no milestones: drop them or use 'step'"
    if t.nesterov and t.momentum <= 0:
        return "train.nesterov", f"Nesterov momentum needs train.momentum > 0, got {t.momentum}"
    if t.nesterov and t.optimizer != "sgd":
        return (
            "train.nesterov",
            f"Nesterov momentum is SGD's, but train.optimizer is {t.optimizer!r}",
        )
    if t.optimizer != "sgd" and not is_constant_lr(t):
        field = (
            "train.warmup"
            if parse_steps(t.warmup)[0]
            else "train.milestones"
            if t.milestones
            else "train.lr_schedule"
        )
        return field, (
            f"learning-rate schedules run with train.optimizer: sgd, not {t.optimizer!r}"
            " (Adam trains at a constant train.lr)"
        )
    return None
