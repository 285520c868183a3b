"""Is CUDA MPS (Multi-Process Service) serving this machine's GPUs?

Why it matters: trials packed onto one GPU (`resources.gpu` < 1) are separate processes. Without MPS
the GPU time-slices between their contexts, so packing adds no throughput (measured on an H200: one
Conv-4 trial 72.5k images/s, 4, 8 or 16 packed 72.2k-72.6k in total); under MPS their small kernels
run side by side (8 packed: 152k). Start it once per GPU node, before Ray: `nvidia-cuda-mps-control -d`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

DEFAULT_PIPE_DIRECTORY = "/tmp/nvidia-mps"
DEFAULT_LOG_DIRECTORY = "/tmp/nvidia-log"  # the daemon's own default (/var/log) needs root
CONTROL = "nvidia-cuda-mps-control"
HINT = (
    "start CUDA MPS on the GPU node before Ray (`nvidia-cuda-mps-control -d`; stop it with "
    "`echo quit | nvidia-cuda-mps-control`)"
)


def pipe_directory() -> Path:
    return Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", DEFAULT_PIPE_DIRECTORY))


def mps_active() -> bool:
    """An MPS control daemon or server runs here, or its control pipe exists (daemon in another
    container sharing the pipe directory)."""
    for proc in psutil.process_iter(["name"]):
        if (proc.info.get("name") or "").startswith("nvidia-cuda-mps"):
            return True
    return (pipe_directory() / "control").exists()


class MpsError(RuntimeError):
    """MPS was asked for and could not be started."""


@contextlib.contextmanager
def mps_daemon(enabled: bool = True, wait_s: float = 10.0) -> Iterator[bool]:
    """Run an MPS control daemon for the duration of the block, then stop it.

    Yields True when this call started it; False when not enabled or one already runs (then it is
    left alone, before and after). Start it before the first CUDA context of the processes that are
    to share the GPU (here: before Ray, or before the benchmark touches the GPU).
    """
    if not enabled or mps_active():
        yield False
        return
    exe = shutil.which(CONTROL)
    if exe is None:
        raise MpsError(
            f"--mps: {CONTROL} not found on PATH (it ships with the NVIDIA driver's utilities)"
        )
    pipe = pipe_directory()
    logs = Path(os.environ.get("CUDA_MPS_LOG_DIRECTORY", DEFAULT_LOG_DIRECTORY))
    pipe.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=str(pipe), CUDA_MPS_LOG_DIRECTORY=str(logs))
    started = subprocess.run([exe, "-d"], env=env, capture_output=True, text=True, timeout=30)
    if started.returncode != 0:
        raise MpsError(
            f"--mps: `{CONTROL} -d` exited with {started.returncode}: "
            f"{(started.stderr or started.stdout).strip() or 'no message'} (see {logs}/control.log)"
        )
    deadline = time.monotonic() + wait_s
    while not mps_active():
        if time.monotonic() > deadline:
            raise MpsError(
                f"--mps: the MPS daemon did not come up within {wait_s:g} s (see {logs})"
            )
        time.sleep(0.1)
    try:
        yield True
    finally:
        subprocess.run([exe], input="quit\n", env=env, capture_output=True, text=True, timeout=30)
