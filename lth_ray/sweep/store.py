"""Files a sweep keeps in its storage (a folder, or s3://... on a cluster), not on one node's disk.

- a trial's resumable state, written by the trial itself after every finished round, before the
  round goes to MLflow: a trial restarted for any reason (a retried fault, a killed or interrupted
  driver followed by `--resume`) continues after the newest round it finished, and a round in MLflow
  is never trained again;
- what shared units hand on: a trunk's dense round 0 (`units/<trunk>.pt`) and a ticket's mask and
  record at every level (`units/<ticket>/round_XX.pt`) for its controls;
- the searcher's state: the plan it releases (`searcher_plan.pt`, written once) and what has
  happened to it (`searcher.pt`, a few KB written by the driver whenever a unit finishes or
  publishes a level): `--resume` starts a new Tune experiment from it, so none of Ray Tune's own
  (pickled) experiment files is ever read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from lth_ray.lottery import safe_io


class Store:
    """Named objects under one root folder or URI, in `safe_io`'s format: reading a file someone
    else wrote to the storage never runs code."""

    def __init__(self, root: str) -> None:
        if "://" in root:
            self.fs, base = pafs.FileSystem.from_uri(root)
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
        self.root = base.rstrip("/")

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def load(self, name: str) -> Any | None:
        if not self.exists(name):
            return None
        with self.fs.open_input_stream(self.path(name)) as f:
            data = f.read()
        return safe_io.loads(data, self.path(name))

    def save(self, name: str, obj: Any) -> None:
        """Write to a temporary name, then rename: a reader sees the old object or the new one."""
        data = safe_io.dumps(obj)
        path = self.path(name)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path + ".partial") as f:
            f.write(data)
        self.fs.move(path + ".partial", path)


def experiment_root(storage: str, ablation: str) -> str:
    """Where Ray Tune keeps an ablation's sweeps (`--storage`, a folder or a URI)."""
    if "://" in storage:
        return storage.rstrip("/") + "/" + ablation
    return str(Path(storage).expanduser().resolve() / ablation)


class SweepStore:
    """One sweep's storage layout, and the only place that spells a path in it:

    <root>/trial_state/<trial key>.pt     a trial's resumable state
    <root>/units/<trunk id>.pt            a trunk's dense round 0
    <root>/units/<ticket>/round_XX.pt     a ticket's mask and record at level XX
    <root>/searcher_plan.pt               the searcher's units and settings, written once
    <root>/searcher.pt                    what happened to them: units done, levels published
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._states, self._units = Store(f"{root}/trial_state"), Store(f"{root}/units")
        self._sweep = Store(root)

    def load_searcher(self) -> dict[str, Any] | None:
        """The searcher's whole state (its plan and its progress), None when either part is missing."""
        plan, progress = self._sweep.load("searcher_plan.pt"), self._sweep.load("searcher.pt")
        if plan is None or progress is None:
            return None
        return {**plan, **progress}

    def save_searcher_plan(self, plan: dict[str, Any]) -> None:
        self._sweep.save("searcher_plan.pt", plan)

    def save_searcher(self, progress: dict[str, Any]) -> None:
        self._sweep.save("searcher.pt", progress)

    @classmethod
    def of_sweep(cls, storage: str, ablation: str, sweep_id: str) -> SweepStore:
        return cls(f"{experiment_root(storage, ablation)}/{sweep_id}")

    def load_state(self, key: str) -> dict[str, Any] | None:
        return self._states.load(f"{key}.pt")

    def save_state(self, key: str, state: dict[str, Any]) -> None:
        self._states.save(f"{key}.pt", state)

    def has_trunk(self, unit_id: str) -> bool:
        return self._units.exists(f"{unit_id}.pt")

    def load_trunk(self, unit_id: str) -> Any | None:
        return self._units.load(f"{unit_id}.pt")

    def save_trunk(self, unit_id: str, result: Any) -> None:
        self._units.save(f"{unit_id}.pt", result)

    def has_level(self, ticket: str, level: int) -> bool:
        return self._units.exists(f"{ticket}/round_{level:02d}.pt")

    def load_level(self, ticket: str, level: int) -> dict[str, Any] | None:
        return self._units.load(f"{ticket}/round_{level:02d}.pt")

    def save_level(self, ticket: str, level: int, data: dict[str, Any]) -> None:
        self._units.save(f"{ticket}/round_{level:02d}.pt", data)
