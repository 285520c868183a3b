"""Reading an ablation file: strict YAML, `--set` overrides, shorthands, types, then validation.

`load_ablation` is the one entry point: it returns a spec whose base trial, sweep sections and every
grid value have been checked, so a bad file fails in the driver, before Ray starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lth_ray.config import safe_yaml
from lth_ray.config.coerce import build
from lth_ray.config.errors import ConfigError
from lth_ray.config.grid import expand_trials
from lth_ray.config.plugins import Plugin, import_plugins, resolve
from lth_ray.config.validate import validate_sweep, validate_trial
from lth_ray.specs import AblationSpec, TrialConfig


def read_yaml(path: Path) -> dict[str, Any]:
    file = str(path)
    if not path.is_file():
        raise ConfigError(file, "<file>", "ablation file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            file,
            "<file>",
            f"expected UTF-8 text; byte {e.start} is not UTF-8 ({raw[e.start]:#04x})",
        ) from None
    data = safe_yaml.parse(text, file)
    if data is None:
        raise ConfigError(file, "<file>", "the file is empty; expected an ablation mapping")
    if not isinstance(data, dict):
        raise ConfigError(file, "<file>", "expected a mapping at the top level")
    return data


def apply_override(data: dict[str, Any], assignment: str, file: str | None) -> None:
    """`--set a.b=value`: the value is YAML (`[1, 2]`, `0.1`, `init`)."""
    if "=" not in assignment:
        raise ConfigError(file, assignment, "a --set override must look like key.path=value")
    key, raw = assignment.split("=", 1)
    if not key.strip():
        raise ConfigError(file, "--set", f"empty key in {assignment!r}; expected key.path=value")
    parts = key.strip().split(".")
    if not all(p.strip() for p in parts):
        raise ConfigError(
            file, "--set", f"{key.strip()!r} has an empty part; expected key.path=value"
        )
    value = safe_yaml.parse(raw, file, key.strip()) if raw.strip() else ""
    node = data
    if parts[0] == "grid" and len(parts) > 1:  # grid keys are dotted field paths themselves
        parts = ["grid", ".".join(parts[1:])]
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(file, key, "cannot set a sub-field of a non-mapping value")
    node[parts[-1]] = value


def normalize(data: dict[str, Any], file: str | None) -> dict[str, Any]:
    """Shorthands -> the typed layout: `controls: [reinit]`, and `baselines.reinit: [criteria]`."""
    data = dict(data)
    controls = data.get("controls")
    listed = controls if isinstance(controls, list) else None
    if isinstance(controls, dict) and isinstance(controls.get("kinds"), list):
        listed = controls["kinds"]
    where = "controls" if isinstance(controls, list) else "controls.kinds"
    for i, kind in enumerate(listed or []):
        if listed.index(kind) != i:
            raise ConfigError(
                file,
                f"{where}[{i}]",
                f"{kind!r} is listed twice; for several controls of one kind give a count:"
                f" controls: {{kinds: {{{kind}: 2}}}}",
            )
    if isinstance(controls, list):
        data["controls"] = {"kinds": {str(k): 1 for k in controls}}
    elif isinstance(controls, dict) and isinstance(controls.get("kinds"), list):
        data["controls"] = {**controls, "kinds": {str(k): 1 for k in controls["kinds"]}}
    baselines = data.get("baselines")
    if isinstance(baselines, dict) and "reinit" in baselines:
        baselines = dict(baselines)
        criteria = baselines.pop("reinit")
        data["baselines"] = baselines
        if data.get("controls"):
            raise ConfigError(
                file, "baselines.reinit", "give the controls once: in 'controls', not also here"
            )
        if not isinstance(criteria, list):
            raise ConfigError(
                file, "baselines.reinit", f"expected a list of criteria, got {criteria!r}"
            )
        if criteria:
            data["controls"] = {"kinds": {"reinit": 1}, "criteria": criteria}
    return data


def cli_overrides(
    sets: list[str] | None,
    data_root: str | None = None,
    max_concurrent: int | None = None,
    max_trials: int | None = None,
) -> list[str]:
    """`--set` assignments plus the fields a command line names directly (`--data-root`,
    `--max-concurrent`, `--max-trials`), in the order they apply."""
    out = list(sets or [])
    if data_root:
        out.append(f"dataset.root={data_root}")
    if max_concurrent is not None:
        out.append(f"tune.max_concurrent={max_concurrent}")
    if max_trials is not None:
        out.append(f"tune.max_trials={max_trials}")
    return out


def plugins_of(spec: AblationSpec, path: str | Path) -> list[Plugin]:
    """The ablation's plugins, file paths resolved against the ablation's folder."""
    return resolve(spec.plugins, Path(path).parent, str(path))


def load_ablation(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> AblationSpec:
    """Read, override (`--set a.b=v`), type-check and validate an ablation file and its grid."""
    path = Path(path)
    file = str(path)
    data = read_yaml(path)
    for assignment in overrides:
        apply_override(data, assignment, file)
    spec = build(AblationSpec, normalize(data, file), "", file)
    import_plugins(plugins_of(spec, path), file)  # before any registry name is checked
    validate_trial(spec, file)
    validate_sweep(spec, file)
    expand_trials(spec, file)  # every axis value and every combination, before anything runs
    return spec


def trial_from_dict(data: dict[str, Any], file: str | None = None) -> TrialConfig:
    """A TrialConfig from its plain dict (what Ray ships to a trial), typed and validated."""
    cfg = build(TrialConfig, data, "", file)
    validate_trial(cfg, file)
    return cfg
