"""A trial's resumable state in the sweep's storage (a folder, or s3://... on a cluster).

The trial writes it itself after every finished round, before the round goes to MLflow, so a trial
restarted for any reason (a retried fault, a killed or interrupted driver followed by `--resume`)
continues after the newest round it finished, and a round in MLflow is never trained again. It lives
in the sweep's storage, not on one node's disk, so a trial can continue on another node.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch


class TrialStore:
    def __init__(self, root: str, key: str) -> None:
        if "://" in root:
            self.fs, base = pafs.FileSystem.from_uri(root)
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
        self.folder = base.rstrip("/")
        self.path = f"{self.folder}/{key}.pt"

    def load(self) -> dict[str, Any] | None:
        if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(self.path) as f:
            data = f.read()
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)

    def save(self, state: dict[str, Any]) -> None:
        """Write to a temporary name, then rename: a reader sees the old state or the new one."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.fs.create_dir(self.folder, recursive=True)
        tmp = self.path + ".partial"
        with self.fs.open_output_stream(tmp) as f:
            f.write(buffer.getvalue())
        self.fs.move(tmp, self.path)
