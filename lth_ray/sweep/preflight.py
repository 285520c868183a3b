"""Machine-level checks of a sweep, run in the driver before Ray starts and before any MLflow write.

A config can be valid and still unrunnable here: a CUDA device asked for where none is visible, more
CPUs per trial than the machine has, a tracking store that cannot be reached or written, a storage
folder that cannot be written. Each fails in seconds with a message naming the setting, instead of
trials that crash, retry or pend.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from lth_ray.config.errors import ConfigError
from lth_ray.specs import AblationSpec, TrialConfig

HEALTH_TIMEOUT_S = 10.0


def check_machine(
    spec: AblationSpec, trials: list[TrialConfig], file: str, local: bool, num_cpus: int | None
) -> None:
    """What this machine can run: only for a local Ray (a cluster's nodes may differ from the driver)."""
    if not local:
        return
    import torch

    if any(t.train.device == "cuda" for t in trials) and not torch.cuda.is_available():
        raise ConfigError(
            file,
            "train.device",
            "is 'cuda' but this machine has no visible CUDA device (use 'auto' to take a GPU when"
            " there is one, or 'cpu')",
        )
    cpus = num_cpus or os.cpu_count() or 1
    if spec.resources.cpu > cpus:
        raise ConfigError(
            file,
            "resources.cpu",
            f"asks for {spec.resources.cpu:g} CPUs per trial but this machine has {cpus}"
            " (--num-cpus or the machine): no trial could ever start",
        )


def check_storage(storage: str) -> None:
    """The Tune results folder can be created and written (remote URIs are left to Ray)."""
    if "://" in storage:
        return
    root = Path(storage).expanduser()
    probe = root / f".lth_ray_write_check_{uuid.uuid4().hex[:8]}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            None, "--storage", f"cannot write Tune results to '{root}': {e.strerror or e}"
        ) from None


def health_problem(uri: str, timeout_s: float) -> str | None:
    """None when a tracking server answers its /health within `timeout_s`, else why not."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            return None if response.status < 400 else f"{url}: HTTP {response.status}"
    except (OSError, urllib.error.URLError) as e:
        return f"{url}: {getattr(e, 'reason', e)}"


def tracking_server_up(uri: str, timeout_s: float = 2.0) -> bool:
    """Whether a tracking server answers its /health now (for the sweep's console watchdog)."""
    return health_problem(uri, timeout_s) is None


def check_tracking(uri: str, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """The MLflow store answers: a tracking server's /health within `timeout_s`, or a sqlite file /
    folder that can be written."""
    if uri.startswith(("http://", "https://")):
        problem = health_problem(uri, timeout_s)
        if problem:
            raise ConfigError(
                None,
                "--tracking-uri",
                f"the MLflow tracking server {uri} does not answer ({problem}); start it"
                " (`mlflow server ...`) or point --tracking-uri / MLFLOW_TRACKING_URI elsewhere",
            )
        return
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        if not path.parent.is_dir():
            raise ConfigError(
                None, "--tracking-uri", f"the folder of the sqlite store '{path}' does not exist"
            )
        try:
            sqlite3.connect(path, timeout=5).execute("PRAGMA user_version").close()
        except sqlite3.Error as e:
            raise ConfigError(
                None, "--tracking-uri", f"cannot open the sqlite store '{path}': {e}"
            ) from None
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
            raise ConfigError(None, "--tracking-uri", f"the sqlite store '{path}' is not writable")
        return
    if "://" not in uri:  # a file store folder
        folder = Path(uri)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(None, "--tracking-uri", f"cannot create '{folder}': {e}") from None
        if not os.access(folder, os.W_OK):
            raise ConfigError(
                None, "--tracking-uri", f"the MLflow folder '{folder}' is not writable"
            )
