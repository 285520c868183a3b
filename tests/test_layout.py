"""The package's floors: imports only run down, no two modules import each other, and the science
and the config load without Ray or MLflow.

Floors, bottom up: the ground floor (specs, schema, registry: data and names), the science
(`lottery/`), the config (it checks ablations against the science), the report (it reads MLflow),
the orchestration (`sweep/`, which runs trials and then writes their report), and the doors on top
(the package's `__init__`, the one-trial CLI, the benchmark). Every import counts, module-level and
inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lth_ray"

FLOORS = {
    "lth_ray.specs": 0,
    "lth_ray.schema": 0,
    "lth_ray.registry": 0,
    "lth_ray.names": 0,
    "lth_ray.lottery": 1,
    "lth_ray.config": 2,
    "lth_ray.report": 3,
    "lth_ray.sweep": 4,
    "lth_ray.trial": 5,
    "lth_ray.bench": 5,
    "lth_ray.mlflow_auth": 5,  # the cluster's MLflow credentials tool
    "lth_ray": 5,  # the package's __init__: the public doors
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor(module: str) -> int:
    """The floor of a module: that of the longest package prefix listed in FLOORS."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in FLOORS:
            return FLOORS[prefix]
    raise AssertionError(f"{module} is on no floor: add it to FLOORS")


def imports(path: Path, known: set[str]) -> set[str]:
    """The lth_ray modules a file imports, anywhere in it (`from a import b` counts as a.b when
    a.b is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lth_ray")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lth_ray"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_every_module_has_a_floor():
    for m in modules():
        floor(m)


def test_imports_only_run_down_a_floor():
    upward = [
        f"{m} (floor {floor(m)}) imports {d} (floor {floor(d)})"
        for m, deps in graph().items()
        for d in sorted(deps)
        if floor(d) > floor(m)
    ]
    assert upward == []


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if d not in g:
                continue
            if state.get(d) == 1:
                cycles.append(path[path.index(d) :] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_checks_see_an_upward_import(tmp_path):
    """The floor check has teeth: a science module importing the sweep is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lth_ray.sweep.tracking import TrialRun\n")
    deps = imports(bad, set(modules()))
    assert deps == {"lth_ray.sweep.tracking"}
    assert floor("lth_ray.lottery.trial") < floor(next(iter(deps)))


def test_the_science_and_the_config_load_without_ray_or_mlflow():
    code = (
        "import sys\n"
        "import lth_ray.lottery.trial, lth_ray.lottery.fit, lth_ray.lottery.artifacts\n"
        "import lth_ray.config.load, lth_ray.config.grid\n"
        "from lth_ray.config.load import load_ablation\n"
        "from lth_ray.config.grid import expand_trials\n"
        "from lth_ray.lottery.data import load_dataset\n"
        "from lth_ray.lottery.trial import LotteryTrial\n"
        "spec = load_ablation('ablations/smoke.yaml', ['prune.rounds=1', 'train.initial=1ep',"
        " 'train.retrain=1ep', 'dataset.synthetic_train=300'])\n"
        "t = expand_trials(spec)[0]\n"
        "LotteryTrial(t, load_dataset(t.dataset)).run()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow'))\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
