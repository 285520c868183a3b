"""Faults of the machine, not of the config: each fails before any trial starts, in seconds, with a
message naming the setting; a trial that fails because of its config is not retried; a killed driver
followed by --resume trains no round twice."""

from __future__ import annotations

import os
import signal
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from lth_ray import schema
from lth_ray.sweep import cli as sweep
from lth_ray.sweep.progress import NoResourcesError, SweepProgress
from tests.test_sweep import SMOKE, children, resume_cli, run_cli, workdir  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def run_fast(args: list[str], capsys) -> tuple[int, str, float]:
    import ray

    t0 = time.monotonic()
    rc = sweep.main([str(SMOKE), *args])
    elapsed = time.monotonic() - t0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    assert not ray.is_initialized(), "Ray started before the check"
    return rc, out.err, elapsed


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_asked_on_a_machine_without_one(workdir, capsys):  # noqa: F811
    rc, err, elapsed = run_fast(["--set", "train.device=cuda"], capsys)
    assert rc == 2 and "train.device" in err and "no visible CUDA device" in err
    assert elapsed < 60 and not (workdir / "mlflow.db").exists()


def test_more_cpus_per_trial_than_the_machine_has(workdir, capsys):  # noqa: F811
    rc, err, elapsed = run_fast(["--set", "resources.cpu=64", "--num-cpus", "2"], capsys)
    assert rc == 2 and "resources.cpu" in err and "64 CPUs" in err and elapsed < 60


def test_unreachable_tracking_server(workdir, capsys):  # noqa: F811
    rc, err, elapsed = run_fast(["--tracking-uri", "http://127.0.0.1:9"], capsys)
    assert rc == 2 and "--tracking-uri" in err and "does not answer" in err
    assert elapsed < 60


def test_unwritable_storage(workdir, capsys):  # noqa: F811
    blocker = workdir / "a-file"
    blocker.write_text("not a folder")
    rc, err, elapsed = run_fast(["--storage", str(blocker / "results")], capsys)
    assert rc == 2 and "--storage" in err and elapsed < 60
    assert not (workdir / "mlflow.db").exists()  # checked before MLflow is touched


def _image_archive(path: Path) -> bytes:
    folder = path.parent / "images"
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 10)):
        for c in ("a", "b"):
            d = folder / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(d / f"{i}.png")
    with tarfile.open(path, "w:xz") as tar:
        tar.add(folder / "train", arcname="train")
        tar.add(folder / "test", arcname="test")
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_archive(workdir, capsys, damage):  # noqa: F811
    good = _image_archive(workdir / "good.tar.xz")
    bad = workdir / "bad.tar.xz"
    bad.write_bytes(good[: len(good) // 2] if damage == "truncated" else b"\x00garbage" * 500)
    rc, err, elapsed = run_fast(
        ["--set", "dataset.name=image_folder", "--data-root", str(bad)]
        + ["--set", "dataset.val_size=10", "--set", f"dataset.cache_dir={workdir / 'cache'}"],
        capsys,
    )
    assert rc == 2 and "dataset.root" in err and "cannot read the archive" in err
    assert str(bad) in err and elapsed < 60


def test_the_watchdog_knows_cpus_and_custom_resources():
    class T:
        def __init__(self, status):
            self.status = status

    lines: list[str] = []
    p = SweepProgress(
        n_trials=2,
        rounds_per_trial={"a": 1, "b": 1},
        pending_timeout_s=0.0,
        has_resources=lambda: False,
        write=lines.append,
        request={"CPU": 64.0, "GPU": 0.0, "accelerator_x": 1.0},
    )
    with pytest.raises(NoResourcesError, match="64 CPU, 1 accelerator_x"):
        p.on_step_end(0, [T("PENDING"), T("PENDING")])
        time.sleep(0.01)
        p.on_step_end(1, [T("PENDING"), T("PENDING")])


def test_a_trial_failing_on_its_config_stops_the_sweep_without_retries(
    workdir,  # noqa: F811
    capsys,
    monkeypatch,
):
    """The driver's checks are switched off here, so the trials meet the bad config themselves:
    the first one to fail ends the sweep with its message, nothing is retried, no --resume hint."""
    import lth_ray.config.validate as validate

    monkeypatch.setattr(validate, "check_feasible", lambda cfg, file=None: None)
    monkeypatch.setattr(sweep, "check_data", lambda trials, file: None)
    rc = sweep.main([str(SMOKE), "--num-cpus", "2", "--set", "prune.exclude=[output, fc, conv]"])
    out = capsys.readouterr()
    assert rc == 2, out.out + out.err
    assert "prune.exclude" in out.err and "trial " in out.err
    assert "retrying" not in out.out and "--resume" not in out.err
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    parents, _ = children(client, "smoke")
    assert parents[0].info.status == "FAILED"
    assert parents[0].data.tags["lth_ray.state"] == "config_error"


def test_a_killed_driver_resumes_without_training_a_round_twice(workdir):  # noqa: F811
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", TUNE_GLOBAL_CHECKPOINT_S="1")
    args = [str(SMOKE), "--num-cpus", "2", "--no-report", "--max-concurrent", "2"]
    args += ["--set", "train.retrain=4ep", "--set", "controls.kinds={}"]
    proc = run_cli(args, env, workdir)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if sum(" round " in s for s in seen) >= 5:
                os.killpg(proc.pid, signal.SIGKILL)  # driver, Ray and trials: no chance to save
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    resume_cli(args, env, workdir)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    parents, kids = children(client, "smoke")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 8
    for run in kids:
        assert run.info.status == "FINISHED"
        # one training of each round: its bookkeeping time is logged once per trained round
        trained = [
            int(m.step)
            for m in client.get_metric_history(run.info.run_id, schema.BOOKKEEPING_METRIC)
        ]
        assert sorted(trained) == sorted(set(trained)), (run.data.tags[schema.TAG_TRIAL], trained)
        logged = sorted(int(m.step) for m in client.get_metric_history(run.info.run_id, "test_acc"))
        assert logged == [0, 1, 2, 3]


def test_the_console_says_when_the_tracking_server_stops_answering():
    up = [True]
    lines: list[str] = []
    p = SweepProgress(
        n_trials=1,
        rounds_per_trial={"a": 1},
        write=lines.append,
        tracking_up=lambda: up[0],
        tracking_every_s=0.0,
    )
    p.on_step_end(0, [])
    assert lines == []
    up[0] = False
    p.on_step_end(1, [])
    p.on_step_end(2, [])
    assert len(lines) == 2 and all("tracking server unreachable" in line for line in lines)
    up[0] = True
    p.on_step_end(3, [])
    assert "reachable again" in lines[-1]
