"""Users' own models, datasets and criteria, without forking: an ablation's `plugins:`.

Each entry is an importable module name (`my_lab.nets`) or a `.py` file, relative to the ablation's
folder. Importing it registers its names (`@MODELS.register("my_net")` and the like), so the driver
imports the plugins before validating the ablation (`--dry-run`, the meta-device checks and
did-you-mean know the new names) and every Ray worker imports them again before it builds anything.
A file is found on a worker by its absolute path (one machine, or a shared file system), else at
the same path relative to the worker's working folder: a job submitted with
`ray job submit --working-dir .` from the folder the sweep was started in brings it along.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lth_ray.config.errors import ConfigError


@dataclass(frozen=True)
class Plugin:
    entry: str  # as the ablation wrote it
    module: str | None = None  # an importable module name
    path: str | None = None  # a file: absolute
    relpath: str | None = None  # a file: relative to the driver's working folder, for a cluster

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def resolve(entries: list[str], base: Path, file: str | None) -> list[Plugin]:
    """Each entry as a module name or an existing .py file; anything else is a config error."""
    out = []
    for i, entry in enumerate(entries):
        where = f"plugins[{i}]"
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError(file, where, f"expected a module name or a .py file, got {entry!r}")
        if entry.endswith(".py"):
            path = (base / entry).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(file, where, f"plugin file '{path}' does not exist")
            try:
                rel = os.path.relpath(path)
            except ValueError:  # another drive (Windows)
                rel = None
            out.append(Plugin(entry, path=str(path), relpath=rel))
        elif _MODULE.match(entry):
            out.append(Plugin(entry, module=entry))
        else:
            raise ConfigError(
                file,
                where,
                f"expected a module name (a.b.c) or a path ending in .py, got {entry!r}",
            )
    return out


def _file_module_name(path: str) -> str:
    stem = re.sub(r"\W", "_", Path(path).stem)
    return f"lth_ray_plugin_{stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def _import_file(path: str) -> None:
    name = _file_module_name(path)
    if name in sys.modules:  # imported once per process: its names are registered already
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load '{path}' as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def import_plugins(plugins: list[Plugin] | list[dict[str, Any]], file: str | None = None) -> None:
    """Import every plugin once in this process; a failure names the plugin and its cause."""
    for i, p in enumerate(plugins):
        p = Plugin(**p) if isinstance(p, dict) else p
        try:
            if p.module is not None:
                importlib.import_module(p.module)
            else:
                assert p.path is not None
                local = Path(p.path)
                if not local.is_file() and p.relpath and Path(p.relpath).is_file():
                    local = Path(p.relpath).resolve()
                _import_file(str(local))
        except Exception as e:  # whatever the user's code raises: report it, do not crash
            raise ConfigError(
                file,
                f"plugins[{i}]",
                f"plugin {p.entry!r} failed to import: {type(e).__name__}: {e}",
            ) from None
