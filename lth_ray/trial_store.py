"""Files a sweep keeps in its storage (a folder, or s3://... on a cluster), not on one node's disk.

- a trial's resumable state, written by the trial itself after every finished round, before the
  round goes to MLflow: a trial restarted for any reason (a retried fault, a killed or interrupted
  driver followed by `--resume`) continues after the newest round it finished, and a round in MLflow
  is never trained again;
- what shared units hand on: a trunk's dense round 0 (`units/<trunk>.pt`) and a ticket's mask and
  record at every level (`units/<ticket>/round_XX.pt`) for its controls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from lth_ray import safe_io


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


class TrialStore:
    """One trial's resumable state."""

    def __init__(self, root: str, key: str) -> None:
        self.store, self.name = Store(root), f"{key}.pt"

    def load(self) -> dict[str, Any] | None:
        return self.store.load(self.name)

    def save(self, state: dict[str, Any]) -> None:
        self.store.save(self.name, state)
