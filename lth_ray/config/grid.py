"""The sweep's trials: the product of the grid's axes, the arms added to each point, names and tags.

An axis is a dotted trial field with its values (`prune.rewind: [init, 1ep]`), or a named bundle whose
values set several fields at once (`net: [{model.arch: conv2, train.lr: 2e-4}, ...]`). Every grid
point gets the main trial (the ticket), a one-shot baseline when asked, and the control arms of its
criterion. A trial's key names its criterion, its seed, every other axis that varies and its arm,
e.g. `magnitude-s3-p0.2-rw1ep-conv6-reinit`, so no two different trials of a sweep share a name.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from dataclasses import dataclass
from typing import Any

from lth_ray import schema
from lth_ray.config import sweep_checks
from lth_ray.config.arms import ARM_NAMES, arm_kind, arm_of  # noqa: F401  (their home is arms)
from lth_ray.config.coerce import coerce, field_type
from lth_ray.config.errors import ConfigError
from lth_ray.config.validate import validate_trial
from lth_ray.specs import AblationSpec, TrialConfig, axis_paths

ALIASES = schema.GRID_KEY_ALIASES  # the older grid keys, still accepted
BUNDLE_LABEL = "label"  # optional key of a bundle value: its name in trial keys
# How a field's value reads in a trial key: a short prefix, or the bare value.
PREFIX = {
    "seed": "s",
    "prune.fraction": "p",
    "prune.rewind": "rw",
    "model.width": "w",
    "train.lr": "lr",
    "train.batch_size": "bs",
    "train.weight_decay": "wd",
    "train.initial": "init",
    "train.retrain": "rt",
    "prune.rounds": "r",
    "dataset.split_seed": "split",
    "train.warmup": "wu",
    "train.momentum": "m",
}
BARE = {
    "prune.criterion",
    "prune.schedule",
    "prune.scope",
    "model.arch",
    "model.init",
    "model.padding",
    "train.precision",
    "train.optimizer",
    "dataset.name",
    "prune.retrain_mode",
    "train.lr_schedule",
}
MAX_KEY = 160  # characters of a trial key (longer keys keep a prefix and a hash)


@dataclass(frozen=True)
class Axis:
    """One key of `grid:`: per value, the fields it sets and its label in trial keys."""

    key: str  # as written in the file
    values: tuple[dict[str, Any], ...]  # dotted trial field -> typed value
    labels: tuple[str, ...]

    @property
    def fields(self) -> list[str]:
        return list(dict.fromkeys(p for v in self.values for p in v))


def format_value(value: Any) -> str:
    """A field value as tags and keys show it: 0.2, 1ep, [3, 16, 16] -> 3x16x16."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "x".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={format_value(v)}" for k, v in sorted(value.items()))
    return str(value)


def label(path: str, value: Any) -> str:
    """The short form of one field's value in a trial key (folder-safe)."""
    text = format_value(value)
    if path in PREFIX:
        text = PREFIX[path] + text
    elif path not in BARE:
        text = path.rsplit(".", 1)[-1] + text
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)


def _is_field(path: str) -> bool:
    if path in axis_paths():
        return True
    parent = path.rsplit(".", 1)[0]  # a key inside a mapping field: prune.layer_fractions.conv
    return "." in path and parent in axis_paths() and field_type(TrialConfig, path) is not None


def _unknown(file: str | None, where: str, path: str) -> ConfigError:
    import difflib

    names = axis_paths()
    close = difflib.get_close_matches(path, names + list(ALIASES), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(
        file,
        where,
        f"unknown trial field '{path}'{hint}; an axis is a dotted field that --help-config lists,"
        " or a bundle name without dots whose values are mappings of such fields",
    )


def set_field(trial: TrialConfig, path: str, value: Any) -> None:
    """Set a dotted field of a trial in place (a mapping field's key too)."""
    *parents, leaf = path.split(".")
    node: Any = trial
    for part in parents:
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    if isinstance(node, dict):
        node[leaf] = copy.deepcopy(value)
    else:
        setattr(node, leaf, copy.deepcopy(value))


def _check_value(
    base: TrialConfig, fields: dict[str, Any], where: str, bundle: bool, file: str | None
) -> None:
    """Validate the base trial with this axis value applied; errors name the axis value."""
    trial = copy.deepcopy(base)
    for path, value in fields.items():
        set_field(trial, path, value)
    try:
        validate_trial(trial, file)
    except ConfigError as e:
        if e.field in fields:
            raise ConfigError(file, f"{where}.{e.field}" if bundle else where, e.message) from None
        raise ConfigError(file, where, f"{e.message} (field '{e.field}')") from None


def parse_axes(spec: AblationSpec, file: str | None = None) -> list[Axis]:
    """The grid's axes, each value typed and validated against the base trial."""
    sizes = {k: len(v) for k, v in spec.grid.items() if isinstance(v, list)}
    sweep_checks.check_count(spec, list(sizes.values()), list(sizes), file)  # before any value
    base = spec.base_trial()
    axes: list[Axis] = []
    owner: dict[str, str] = {}  # field -> the axis that sets it
    for key, raw in spec.grid.items():
        where = f"grid.{key}"
        if not isinstance(raw, list) or not raw:
            raise ConfigError(file, where, f"expected a non-empty list of values, got {raw!r}")
        path = ALIASES.get(key, key)
        if _is_field(path):
            tp = field_type(TrialConfig, path)
            values = [{path: coerce(tp, v, f"{where}[{i}]", file)} for i, v in enumerate(raw)]
            labels = [label(path, v[path]) for v in values]
        elif "." in key or not all(isinstance(v, dict) for v in raw):
            raise _unknown(file, where, key)
        else:
            values, explicit = [], []
            for i, v in enumerate(raw):
                fields = {}
                for inner, x in v.items():
                    if inner == BUNDLE_LABEL:
                        continue
                    if not _is_field(str(inner)):
                        raise _unknown(file, f"{where}[{i}].{inner}", str(inner))
                    tp = field_type(TrialConfig, str(inner))
                    fields[str(inner)] = coerce(tp, x, f"{where}[{i}].{inner}", file)
                if not fields:
                    raise ConfigError(file, f"{where}[{i}]", "expected at least one field to set")
                values.append(fields)
                explicit.append(v.get(BUNDLE_LABEL))
            sweep_checks.check_labels(key, explicit, file)
            labels = _bundle_labels(values, explicit)
        first: dict[str, int] = {}
        for i, v in enumerate(values):
            j = first.setdefault(repr(sorted(v.items())), i)
            if j != i:
                raise ConfigError(
                    file, f"{where}[{i}]", f"repeats {where}[{j}] ({format_value(raw[i])})"
                )
            _check_value(base, v, f"{where}[{i}]", not _is_field(path), file)
        sweep_checks.check_axis_values(base, key, values, set_field, file)
        for f in dict.fromkeys(p for v in values for p in v):
            if f in owner:
                raise ConfigError(
                    file, where, f"field '{f}' is already an axis (grid.{owner[f]}); set it once"
                )
            owner[f] = key
        axes.append(Axis(key, tuple(values), tuple(labels)))
    return axes


def _bundle_labels(values: list[dict[str, Any]], explicit: list[Any]) -> list[str]:
    """A bundle value's label: its `label`, else the first field that tells the values apart."""
    out = []
    for v, given in zip(values, explicit):
        if given is not None:
            out.append(re.sub(r"[^A-Za-z0-9_.=+-]", "_", str(given)))
            continue
        parts = [
            label(p, x) for p, x in v.items() if len({format_value(w.get(p)) for w in values}) > 1
        ]
        out.append(parts[0] if parts else label(*next(iter(v.items()))))
    return out


def _arm(trial: TrialConfig, schedule: str, control: str, index: int) -> TrialConfig:
    t = copy.deepcopy(trial)
    t.prune.schedule, t.prune.control, t.prune.control_index = schedule, control, index  # type: ignore[assignment]
    return t


def identity(t: TrialConfig) -> str:
    """What makes two trials the same work: their config without the key and tags."""
    d = t.to_dict()
    d.pop("key"), d.pop("axes")
    return repr(d)


def expand_trials(spec: AblationSpec, file: str | None = None) -> list[TrialConfig]:
    """Every trial of the sweep: the tickets of all grid points, then one-shot baselines, then
    controls; each with its key and its varying fields (`axes`) set."""
    axes = parse_axes(spec, file)
    varying = [a for a in axes if len(a.values) > 1]
    base = spec.base_trial()
    points = []
    for combo in itertools.product(*(range(len(a.values)) for a in axes)):
        t = copy.deepcopy(base)
        names = {}
        for a, i in zip(axes, combo):
            for path, value in a.values[i].items():
                set_field(t, path, value)
            names[a.key] = a.labels[i]
        t.axes = {
            p: format_value(a.values[i].get(p, _get(base, p)))
            for a, i in zip(axes, combo)
            if a in varying
            for p in a.fields
        }
        others = [names[a.key] for a in varying if not {"prune.criterion", "seed"} & set(a.fields)]
        points.append((t, others))
    wanted = set(spec.controls.criteria)
    swept = {t.prune.criterion for t, _ in points}
    for i, c in enumerate(spec.controls.criteria):
        if c not in swept:
            raise ConfigError(
                file,
                f"controls.criteria[{i}]",
                f"{c!r} is not a criterion of this sweep ({', '.join(sorted(swept))}):"
                " its controls would never run",
            )
    tickets, one_shots, controls = [], [], []
    for t, others in points:
        stem = [t.prune.criterion, f"s{t.seed}", *others]
        tickets.append(_named(_arm(t, t.prune.schedule, t.prune.control, 0), stem, []))
        if spec.baselines.one_shot and t.prune.schedule != "one_shot":
            one_shots.append(_named(_arm(t, "one_shot", "none", 0), stem, ["oneshot"]))
        if wanted and t.prune.criterion not in wanted:
            continue
        for kind, n in spec.controls.kinds.items():
            for k in range(n):
                suffix = ARM_NAMES[kind] + (str(k) if n > 1 else "")
                controls.append(_named(_arm(t, t.prune.schedule, kind, k), stem, [suffix]))
    points = {sweep_checks.work_identity(t) for t in tickets}
    one_shots = [t for t in one_shots if sweep_checks.work_identity(t) not in points]  # noted
    trials = tickets + one_shots + controls
    sweep_checks.check_same_work(trials, file)  # never two names for one piece of work
    sweep_checks.check_devices(spec, trials, file)
    rates = next((a for a in varying if "prune.fraction" in a.fields), None)
    if rates is not None:
        for t in trials:
            typed = {"conv", "fc", "output"} - set(t.prune.exclude)
            if t.prune.scope == "layerwise" and typed <= set(t.prune.layer_fractions):
                raise ConfigError(
                    file,
                    f"grid.{rates.key}",
                    f"trial {t.key}: prune.layer_fractions sets every layer type's rate"
                    f" ({t.prune.layer_fractions}), so prune.fraction is never used: vary"
                    " prune.layer_fractions.<type> instead",
                )
    if len(varying) > 1:  # values valid alone may clash together (a rewind point past round 0)
        for t in trials:
            try:
                validate_trial(t, file)
            except ConfigError as e:
                raise ConfigError(
                    file, "grid", f"trial {t.key}: field '{e.field}': {e.message}"
                ) from None
    for t in trials:  # a key names folders: keep it well under a file name's 255 bytes
        if len(t.key) > MAX_KEY:
            t.key = (
                t.key[: MAX_KEY - 11] + "-" + hashlib.sha256(identity(t).encode()).hexdigest()[:10]
            )
    by_key: dict[str, list[TrialConfig]] = {}
    for t in trials:
        by_key.setdefault(t.key, []).append(t)
    for same in by_key.values():
        if len(same) > 1:  # labels that coincide (rare: two generic labels): keep keys unique
            for t in same:
                t.key += "-" + hashlib.sha256(identity(t).encode()).hexdigest()[:6]
    return trials


def _get(trial: TrialConfig, path: str) -> Any:
    node: Any = trial
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part)
    return node


def _named(t: TrialConfig, stem: list[str], arm: list[str]) -> TrialConfig:
    t.key = "-".join(stem + arm)
    return t


def trial_key(t: TrialConfig) -> str:
    """The trial's name in its sweep (set by expand_trials), else one from its own fields."""
    if t.key:
        return t.key
    arm = [] if arm_of(t) == "ticket" else [ARM_NAMES.get(t.prune.control, "oneshot")]
    if t.prune.control_index:
        arm[-1] += str(t.prune.control_index)
    return "-".join([t.prune.criterion, f"s{t.seed}", *arm])


def varying_fields(trials: list[TrialConfig]) -> list[str]:
    """The fields that vary across these trials, in grid order, plus the arm when arms differ."""
    fields = list(dict.fromkeys(p for t in trials for p in t.axes))
    if len({arm_of(t) for t in trials}) > 1:
        fields.append("arm")
    return fields
