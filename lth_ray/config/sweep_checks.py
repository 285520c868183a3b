"""What makes a sweep refused as a whole: too many trials, work spelled twice, arms with nothing to
attach to, and resources that contradict the device.

The size is counted from the axes before any trial is built, so a grid of 10^7 points is refused in
milliseconds. Two grid values that spell the same work (`3ep` and the same number of iterations,
`0ep` beside `init`, a bundle value equal to another once applied) would make two trials with one
result: they are refused with both names instead of being merged in silence.
"""

from __future__ import annotations

import math
from typing import Any

from lth_ray.config.errors import ConfigError
from lth_ray.lottery.schedule import parse_rewind, parse_steps
from lth_ray.specs import AblationSpec, TrialConfig

STEP_FIELDS = ("train.initial", "train.retrain", "train.eval_every")
RESOURCE_STEP = 0.01  # Ray counts resources in 1/10000ths; below a hundredth is surely a typo


def count_trials(spec: AblationSpec, axis_sizes: list[int]) -> int:
    """An upper bound of the trials the grid makes, by arithmetic alone: every point's ticket and
    baseline, and the controls of the points whose criterion gets them."""
    points = math.prod(axis_sizes)
    controls = sum(spec.controls.kinds.values())
    with_controls = points
    wanted = set(spec.controls.criteria)
    axis = next((spec.grid[k] for k in ("prune.criterion", "criteria") if k in spec.grid), None)
    if wanted and isinstance(axis, list) and axis:
        with_controls = points // len(axis) * sum(c in wanted for c in axis)
    elif wanted and axis is None and spec.prune.criterion not in wanted:
        with_controls = 0
    return points * (1 + int(spec.baselines.one_shot)) + with_controls * controls


def check_count(
    spec: AblationSpec, axis_sizes: list[int], where: list[str], file: str | None
) -> None:
    n = count_trials(spec, axis_sizes)
    cap = spec.tune.max_trials
    if n > cap:
        sizes = " x ".join(f"{k} ({s})" for k, s in zip(where, axis_sizes)) or "no axis"
        per_point = 1 + int(spec.baselines.one_shot) + sum(spec.controls.kinds.values())
        field = "controls.kinds" if sum(spec.controls.kinds.values()) >= cap else "grid"
        raise ConfigError(
            file,
            field,
            f"the sweep would hold up to {n:,} trials ({sizes}, up to {per_point} arms per point),"
            " over"
            f" the cap of {cap:,}: narrow it, or raise the cap with --max-trials N"
            " (tune.max_trials)",
        )


def check_arms(spec: AblationSpec, file: str | None) -> None:
    """Fields the grid sets itself, and arms that would silently do nothing."""
    if spec.prune.control != "none":
        raise ConfigError(
            file,
            "prune.control",
            f"{spec.prune.control!r} would turn every ticket into a control without its ticket:"
            " ask for controls in 'controls: [reinit, random_mask]' instead",
        )
    for key in spec.grid:
        if key in ("prune.control", "prune.control_index"):
            raise ConfigError(
                file,
                f"grid.{key}",
                "control arms are not an axis: list them in 'controls:', and each ticket gets them",
            )


def check_labels(key: str, explicit: list[Any], file: str | None) -> None:
    """Explicit bundle labels name trials: strings, safe, and different from each other."""
    from lth_ray.names import slug_problem

    seen: dict[str, int] = {}
    for i, given in enumerate(explicit):
        if given is None:
            continue
        where = f"grid.{key}[{i}].label"
        if not isinstance(given, str):
            raise ConfigError(file, where, f"expected a string label, got {given!r}")
        problem = slug_problem(given)
        if problem:
            raise ConfigError(file, where, problem)
        if given in seen:
            raise ConfigError(
                file, where, f"label {given!r} is already grid.{key}[{seen[given]}]'s"
            )
        seen[given] = i


def _iterations(t: TrialConfig, steps: tuple[int, str]) -> tuple[int, str]:
    """Steps in iterations when the data's size is known from the config, else as written."""
    from lth_ray.config.feasible import train_size
    from lth_ray.lottery.train import batches_per_epoch

    n, unit = steps
    size = train_size(t.dataset)
    if unit == "ep" and size is not None:
        return n * batches_per_epoch(max(size, 1), t.train), "it"
    return n, unit


def work_identity(t: TrialConfig) -> str:
    """What a trial computes: its config with step lengths in iterations, a rewind to step 0 as
    'init', without its key and tags."""
    d = t.to_dict()
    d.pop("key"), d.pop("axes")
    for path in STEP_FIELDS:
        section, leaf = path.split(".")
        d[section][leaf] = _iterations(t, parse_steps(d[section][leaf]))
    k = parse_rewind(t.prune.rewind)
    d["prune"]["rewind"] = None if k is None or k[0] == 0 else _iterations(t, k)
    if d["prune"]["rewind"] is None:
        d["prune"]["rewind_budget"] = None  # only a late rewind has a budget to spend
    if t.train.optimizer == "adam":
        d["train"]["momentum"] = None  # SGD's
    else:
        d["train"]["betas"] = d["train"]["eps"] = d["train"]["eps_style"] = None  # Adam's
    return repr(d)


def check_axis_values(base: TrialConfig, key: str, values: list[dict], set_field, file) -> None:
    """Two values of one axis that, applied to the base trial, spell the same work."""
    import copy

    seen: dict[str, int] = {}
    for i, fields in enumerate(values):
        t = copy.deepcopy(base)
        for path, value in fields.items():
            set_field(t, path, value)
        ident = work_identity(t)
        if ident in seen:
            raise ConfigError(
                file,
                f"grid.{key}[{i}]",
                f"is the same work as grid.{key}[{seen[ident]}] once applied to the base trial"
                f" ({_spell(values[seen[ident]])} vs {_spell(fields)}): drop one",
            )
        seen[ident] = i


def _spell(fields: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in fields.items())


def check_same_work(trials: list[TrialConfig], file: str | None) -> None:
    """Refuse two trials of the sweep that compute the same thing under different names."""
    seen: dict[str, TrialConfig] = {}
    for t in trials:
        ident = work_identity(t)
        other = seen.get(ident)
        if other is None:
            seen[ident] = t
            continue
        differ = sorted(
            k for k in set(t.axes) | set(other.axes) if t.axes.get(k) != other.axes.get(k)
        )
        field = f"grid.{differ[0]}" if differ else "grid"
        spelled = ", ".join(f"{k}: {other.axes.get(k)} / {t.axes.get(k)}" for k in differ)
        raise ConfigError(
            file,
            field,
            f"trials {other.key} and {t.key} are the same work ({spelled or 'identical configs'}):"
            " drop one of the values",
        )


def check_devices(spec: AblationSpec, trials: list[TrialConfig], file: str | None) -> None:
    """A trial's device against the resources Ray gives it."""
    r = spec.resources
    for name, v in (("cpu", r.cpu), ("gpu", r.gpu)):
        if 0 < v < RESOURCE_STEP:
            raise ConfigError(
                file,
                f"resources.{name}",
                f"{v:g} is below the smallest share Ray schedules sensibly; expected"
                f" {'0 or ' if name == 'gpu' else ''}at least {RESOURCE_STEP:g}",
            )
    devices = {t.train.device for t in trials}
    if "cuda" in devices and r.gpu <= 0:
        import torch

        here = "" if torch.cuda.is_available() else "this machine has no visible CUDA device, and "
        raise ConfigError(
            file,
            "train.device",
            f"is 'cuda' but {here}resources.gpu is 0: Ray hides every GPU from such a trial; set"
            " resources.gpu (e.g. 1, or 0.25 to pack four trials per GPU)",
        )


def sweep_notes(spec: AblationSpec, trials: list[TrialConfig]) -> list[str]:
    """What the sweep did not do as literally asked, for the console and `--dry-run`."""
    from lth_ray.config.arms import ARM_NAMES, arm_of

    notes = []
    if spec.controls.criteria and not spec.controls.kinds:
        notes.append(
            "note: controls.criteria is set but no control kind (controls.kinds): no control runs"
        )
    if spec.resources.gpu > 0 and {t.train.device for t in trials} == {"cpu"}:
        notes.append(
            f"note: resources.gpu reserves {spec.resources.gpu:g} GPU per trial, but every trial"
            " trains on the CPU (train.device: cpu): set resources.gpu: 0 to leave the GPUs to"
            " others, or train.device: auto to use them"
        )
    if not spec.baselines.one_shot:
        return notes
    points = [t for t in trials if t.prune.control == "none"]
    baselines = sum(t.key.endswith("-" + ARM_NAMES["one_shot"]) for t in points)
    iterative = sum(arm_of(t) == "ticket" for t in points)
    one_shot_points = len(points) - baselines - iterative
    if one_shot_points:
        which = "every grid point is" if not iterative else f"{one_shot_points} grid points are"
        notes.append(
            f"note: baselines.one_shot adds no trial where {which} one-shot already"
            " (prune.schedule: one_shot): such a point is its own one-shot baseline"
        )
    if iterative > baselines:
        notes.append(
            f"note: {iterative - baselines} one-shot baselines are not added: each is a one-shot"
            " grid point of the sweep already (grid.prune.schedule), which serves as the baseline"
        )
    return notes
