"""Detection of CUDA MPS, which decides whether packed trials share a GPU or time-slice it."""

from __future__ import annotations

from types import SimpleNamespace

import psutil

from lth_ray import mps


def _procs(*names):
    return lambda attrs: [SimpleNamespace(info={"name": n}) for n in names]


def test_mps_daemon_process_is_detected(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    monkeypatch.setattr(psutil, "process_iter", _procs("python", "nvidia-cuda-mps-control"))
    assert mps.mps_active()
    monkeypatch.setattr(psutil, "process_iter", _procs("python", "nvidia-smi"))
    assert not mps.mps_active()


def test_mps_control_pipe_is_detected(monkeypatch, tmp_path):
    monkeypatch.setattr(psutil, "process_iter", _procs("python"))
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    assert mps.pipe_directory() == tmp_path and not mps.mps_active()
    (tmp_path / "control").touch()
    assert mps.mps_active()
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY")
    assert str(mps.pipe_directory()) == mps.DEFAULT_PIPE_DIRECTORY
