"""Detection of CUDA MPS, which decides whether packed trials share a GPU or time-slice it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from lth_ray.sweep import mps

SMOKE = str(Path(__file__).resolve().parents[1] / "ablations" / "smoke.yaml")


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


class FakeControl:
    """Stands in for nvidia-cuda-mps-control: '-d' creates the control pipe, 'quit' removes it."""

    def __init__(self, pipe, returncode=0):
        self.pipe, self.returncode, self.calls = pipe, returncode, []

    def __call__(self, cmd, input=None, env=None, **kwargs):
        self.calls.append((cmd[1:], input, env["CUDA_MPS_PIPE_DIRECTORY"]))
        if cmd[1:] == ["-d"] and self.returncode == 0:
            (self.pipe / "control").touch()
        if input == "quit\n":
            (self.pipe / "control").unlink()
        return SimpleNamespace(returncode=self.returncode, stdout="", stderr="boom")


def _fake_mps(monkeypatch, tmp_path, returncode=0, installed=True):
    import shutil
    import subprocess

    pipe = tmp_path / "pipe"
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipe))
    monkeypatch.setenv("CUDA_MPS_LOG_DIRECTORY", str(tmp_path / "log"))
    monkeypatch.setattr(psutil, "process_iter", _procs("python"))
    monkeypatch.setattr(shutil, "which", lambda name: f"/x/{name}" if installed else None)
    control = FakeControl(pipe, returncode)
    monkeypatch.setattr(subprocess, "run", control)
    return control, pipe


def test_mps_daemon_starts_and_stops_around_the_block(monkeypatch, tmp_path):
    control, pipe = _fake_mps(monkeypatch, tmp_path)
    with mps.mps_daemon() as started:
        assert started and mps.mps_active()
        assert control.calls == [(["-d"], None, str(pipe))]
    assert control.calls[-1] == ([], "quit\n", str(pipe)) and not mps.mps_active()


def test_mps_daemon_leaves_a_running_one_alone_and_is_off_unless_asked(monkeypatch, tmp_path):
    control, pipe = _fake_mps(monkeypatch, tmp_path)
    with mps.mps_daemon(enabled=False) as started:
        assert not started
    pipe.mkdir()
    (pipe / "control").touch()  # somebody else's daemon
    with mps.mps_daemon() as started:
        assert not started
    assert control.calls == [] and (pipe / "control").exists()


def test_mps_daemon_errors_name_the_problem(monkeypatch, tmp_path):
    _fake_mps(monkeypatch, tmp_path, installed=False)
    with pytest.raises(mps.MpsError, match="nvidia-cuda-mps-control not found"):
        with mps.mps_daemon():
            pass
    _fake_mps(monkeypatch, tmp_path, returncode=1)
    with pytest.raises(mps.MpsError, match="exited with 1: boom"):
        with mps.mps_daemon():
            pass


def test_sweep_mps_flag_is_for_a_local_ray(capsys):
    from lth_ray.sweep import cli as sweep

    assert sweep.main([SMOKE, "--mps", "--address", "auto"]) == sweep.EXIT_CONFIG
    assert "--mps starts MPS for a local Ray" in capsys.readouterr().err


def test_sweep_mps_flag_fails_cleanly_without_the_daemon(monkeypatch, tmp_path, capsys):
    from lth_ray.sweep import cli as sweep

    _fake_mps(monkeypatch, tmp_path, installed=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert sweep.main([SMOKE, "--mps"]) == sweep.EXIT_CONFIG
    assert "nvidia-cuda-mps-control not found" in capsys.readouterr().err
    # a dry run needs no GPU sharing: no daemon asked for
    assert sweep.main([SMOKE, "--mps", "--dry-run"]) == sweep.EXIT_OK


def test_bench_mps_flag_fails_cleanly_without_the_daemon(monkeypatch, tmp_path, capsys):
    from lth_ray.bench.__main__ import main

    _fake_mps(monkeypatch, tmp_path, installed=False)
    assert main(["--quick", "--mps", "--no-sweep", "--out", str(tmp_path / "b.json")]) == 2
    assert "nvidia-cuda-mps-control not found" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()  # nothing measured without the asked-for sharing
