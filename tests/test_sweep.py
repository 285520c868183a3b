"""The sweep for real: Ray Tune on a local 2-CPU Ray (loopback, own temp dir) and MLflow on a sqlite
file in a temp folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from lth_ray import schema
from lth_ray.config.grid import expand_trials, trial_key
from lth_ray.config.load import load_ablation
from lth_ray.lottery.data import load_dataset
from lth_ray.lottery.trial import LotteryTrial
from lth_ray.sweep import cli as sweep

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "ablations" / "smoke.yaml"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a temp folder; Ray on loopback with a short temp dir of its own (unix socket paths)."""
    ray_tmp = tempfile.mkdtemp(prefix="lthray", dir="/tmp")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LTH_RAY_TMPDIR", ray_tmp)
    monkeypatch.setenv("LTH_RAY_NODE_IP", "127.0.0.1")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield tmp_path
    import ray

    ray.shutdown()
    shutil.rmtree(ray_tmp, ignore_errors=True)


def children(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_SWEEP]
    kids = [r for r in runs if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_TRIAL]
    return parents, kids


def rounds_logged(client: MlflowClient, run_id: str, key: str = "test_acc") -> list[int]:
    return sorted(int(m.step) for m in client.get_metric_history(run_id, key))


def test_smoke_sweep_with_a_killed_trial(workdir, monkeypatch):
    victim = "magnitude-s1"
    marker = workdir / "fault-happened"
    monkeypatch.setenv("LTH_RAY_FAULT", f"{victim}@2")
    monkeypatch.setenv("LTH_RAY_FAULT_MARKER", str(marker))
    t0 = time.monotonic()
    rc = sweep.main([str(SMOKE), "--num-cpus", "2"])
    elapsed = time.monotonic() - t0
    assert rc == 0
    assert marker.exists(), "the fault hook did not fire"
    print(f"smoke sweep with one retried trial: {elapsed:.1f} s")

    spec = load_ablation(SMOKE)
    trials = {trial_key(t): t for t in expand_trials(spec)}
    assert len(trials) >= 8
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    parents, kids = children(client, "smoke")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert len(kids) == len(trials)
    # the report ran at the end and is attached to the parent run
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/summary.md", "report/trials.csv", "report/accuracy_vs_weights.png"} <= report
    # the study's questions: paired comparisons, learning curves, what the masks look like
    assert {
        "report/comparisons.csv",
        "report/diff_ticket_vs_controls.png",
        "report/learning_curves.png",
        "report/mask_profile.png",
        "report/mask_overlap.png",
        "report/mask_overlap.csv",
    } <= report, sorted(report)
    summary = Path(client.download_artifacts(parent.info.run_id, "report/summary.md", str(workdir)))
    assert "## Verdict" in summary.read_text()
    for run in kids:
        tags = run.data.tags
        t = trials[tags[schema.TAG_TRIAL]]
        assert tags[schema.MLFLOW_PARENT] == parent.info.run_id
        assert tags[schema.TAG_SWEEP] == parent.data.tags[schema.TAG_SWEEP]
        assert tags[schema.TAG_CRITERION] == t.prune.criterion
        assert tags[schema.TAG_SEED] == str(t.seed)
        assert tags[schema.TAG_PRUNE_RATE] == f"{t.prune.fraction:g}"
        assert (tags[schema.TAG_SCHEDULE], tags[schema.TAG_CONTROL]) == (
            t.prune.schedule,
            t.prune.control,
        )
        assert run.info.status == "FINISHED"
        assert (tags[schema.TAG_DEVICE], tags[schema.TAG_PRECISION]) == (
            "cpu",
            "fp32",
        )  # auto on CPU
        assert run.data.params["prune.criterion"] == t.prune.criterion
        # each finished round's Ray + MLflow time, once per round (the killed attempt's round 2 died
        # before its report, so it is there once too)
        bookkeeping = client.get_metric_history(run.info.run_id, schema.BOOKKEEPING_METRIC)
        assert sorted(int(m.step) for m in bookkeeping) == list(range(t.prune.rounds + 1)), t
        assert all(0 < m.value < 60 for m in bookkeeping)
        for key in ("test_acc", "sparsity", "weights_remaining", "best_epoch"):
            assert rounds_logged(client, run.info.run_id, key) == list(range(t.prune.rounds + 1)), (
                t,
                key,
            )
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"rounds.csv", "trial.json", "masks"} <= arts

    # the killed trial resumed at round 2 and computed exactly what an uninterrupted run computes
    victim_run = next(r for r in kids if r.data.tags[schema.TAG_TRIAL] == victim)
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # as in the trial's worker (1 CPU): float sums depend on the thread count
    try:
        reference = LotteryTrial(trials[victim], load_dataset(trials[victim].dataset))
        reference.run()
    finally:
        torch.set_num_threads(threads)
    for key in ("test_acc", "test_loss", "sparsity", "best_epoch"):
        logged = [
            m.value
            for m in sorted(
                client.get_metric_history(victim_run.info.run_id, key), key=lambda m: m.step
            )
        ]
        expected = [float(r[key]) for r in reference.state.history]
        assert logged == pytest.approx(expected, rel=1e-6, abs=1e-9), key


def test_dry_run_and_bad_input_fail_before_ray(workdir, capsys):
    import ray

    assert sweep.main([str(ROOT / "ablations" / "criteria_conv4.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "120 trials" in out and "stability" in out and "one_shot" in out and "reinit" in out
    assert len([line for line in out.splitlines() if line[:1].isdigit()]) == 120

    rc = sweep.main([str(SMOKE), "--set", "prune.fraction=2"])
    err = capsys.readouterr().err
    assert rc == 2 and "prune.fraction" in err and "smoke.yaml" in err
    rc = sweep.main([str(SMOKE), "--set", "prune.rewind=5000it"])  # round 0 is 3ep: 60 iterations
    err = capsys.readouterr().err
    assert rc == 2 and "prune.rewind" in err and "beyond round 0" in err and "smoke.yaml" in err
    rc = sweep.main([str(SMOKE), "--set", "dataset.val_size=5000"])
    err = capsys.readouterr().err
    assert rc == 2 and "dataset.val_size" in err
    rc = sweep.main(
        [
            str(ROOT / "ablations" / "seed_study.yaml"),
            "--set",
            "dataset.download=false",
            "--data-root",
            str(workdir / "nothing"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--data-root" in err and "nothing" in err
    assert not ray.is_initialized()
    assert not (workdir / "mlflow.db").exists()


GRID = "{prune.rewind: [init, 1ep], model.width: [0.125, 0.25], seed: [0, 1]}"


def test_any_field_is_an_axis_end_to_end(workdir, capsys):
    """Rewind point x width x seed: 8 distinct trials through Ray, MLflow and the report."""
    args = [str(SMOKE), "--set", f"grid={GRID}", "--set", "controls.kinds={}"]
    args += ["--set", "prune.rounds=2", "--set", "train.retrain=2ep"]
    assert sweep.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 trials" in out and "varying: prune.rewind, model.width, seed" in out
    assert sweep.main([*args, "--num-cpus", "2"]) == 0
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    parents, kids = children(client, "smoke")
    names = sorted(r.data.tags[schema.TAG_TRIAL] for r in kids)
    assert len(names) == len(set(names)) == 8
    assert "magnitude-s1-rw1ep-w0.25" in names
    for run in kids:
        tags = run.data.tags
        assert tags[schema.TAG_AXES] == "prune.rewind,model.width,seed"
        assert run.data.params["prune.rewind"] == tags["prune.rewind"]
        assert run.data.params["model.width"] == tags["model.width"]
        assert run.info.status == "FINISHED"
    exp = client.get_experiment_by_name("smoke").experiment_id
    late = client.search_runs([exp], "tags.\"prune.rewind\" = '1ep'")
    assert len(late) == 4 and all(r.data.params["prune.rewind"] == "1ep" for r in late)
    report = Path("reports") / parents[0].data.tags[schema.TAG_SWEEP]
    summary = (report / "summary.md").read_text()
    assert "| criterion | rate | prune.rewind | model.width | schedule |" in summary
    assert (report / "accuracy_by_prune_rewind.png").is_file()
    assert (report / "accuracy_by_model_width.png").is_file()
    trials = __import__("pandas").read_csv(report / "trials.csv")
    assert set(trials["prune.rewind"]) == {"init", "1ep"}
    assert trials.groupby(["prune.rewind", "model.width"])["trial"].nunique().eq(2).all()


def test_a_typo_in_an_axis_value_fails_before_ray(workdir, capsys):
    import ray

    bad = GRID.replace("1ep", "5xp")
    rc = sweep.main([str(SMOKE), "--set", f"grid={bad}", "--num-cpus", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "smoke.yaml" in err and "grid.prune.rewind[1]" in err and "'5xp'" in err
    assert not ray.is_initialized() and not (workdir / "mlflow.db").exists()


def test_missing_gpu_is_reported_not_pending_forever(workdir, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc = sweep.main(
        [
            str(SMOKE),
            "--num-cpus",
            "2",
            "--set",
            "resources.gpu=0.5",
            "--set",
            "resources.gpu_fallback=error",
        ]
    )
    assert rc == 2
    assert "resources.gpu" in capsys.readouterr().err


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lth_ray.sweep", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def resume_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600):
    """`python -m lth_ray.sweep ... --resume`, which must finish."""
    resumed = subprocess.run(
        [sys.executable, "-m", "lth_ray.sweep", *args, "--resume"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return resumed


def test_interrupted_sweep_resumes_only_unfinished(workdir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    args = [
        str(SMOKE),
        "--num-cpus",
        "2",
        "--no-report",
        "--max-concurrent",
        "2",
        "--set",
        "train.retrain=4ep",
        "--set",
        "controls.kinds={}",  # the 8 tickets
    ]
    proc = run_cli(args, env, workdir)
    lines: list[str] = []
    finished_before: set[str] = set()
    try:
        for line in proc.stdout:
            lines.append(line)
            if "round 3/3" in line:
                finished_before.add(line.split("]")[1].split()[0])
            if len(finished_before) >= 2 and "round 3/3" not in line:  # a line later: mid-way
                os.killpg(proc.pid, signal.SIGINT)
                break
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines += out.splitlines(keepends=True)
    text = "".join(lines)
    assert proc.returncode != 0, text
    assert "--resume" in text, text

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    _, kids_before = children(client, "smoke")
    done_before = {
        r.data.tags[schema.TAG_TRIAL] for r in kids_before if r.info.status == "FINISHED"
    }
    # A trial that had reported its last round may still have been finalising (artifacts, run
    # status) when interrupted: it is unfinished and may redo that round; MLflow still gets it once.
    assert done_before and len(done_before) < 8

    # nothing Ray Tune pickled is read back on --resume: spoil every pickle of the interrupted run
    pickles = list((workdir / "ray_results").rglob("*.pkl"))
    assert pickles
    for f in pickles:
        f.write_bytes(b"not a pickle: a resume that unpickled this would fail")
    resumed = resume_cli(args, env, workdir)
    for key in done_before:  # finished trials did not train again
        assert f"] {key} round" not in resumed.stdout, (key, text, resumed.stdout)
    assert "round" in resumed.stdout  # the unfinished ones did
    parents, kids = children(client, "smoke")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 8, sorted(
        (r.data.tags[schema.TAG_TRIAL], r.info.status, r.info.start_time) for r in kids
    )
    for run in kids:
        assert run.info.status == "FINISHED"
        assert rounds_logged(client, run.info.run_id) == [0, 1, 2, 3]


def test_gpu_request_without_gpu_falls_back_or_fails(monkeypatch):
    import ray

    from lth_ray.config.errors import ConfigError

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    spec = load_ablation(SMOKE, ["resources.gpu=0.5"])
    gpu, note = sweep.resolve_gpu(spec, local=True)
    assert gpu == 0.0 and "CPU" in note
    assert sweep.resolve_gpu(spec, local=False) == (0.5, None)  # a cluster may still add GPU nodes
    with pytest.raises(ConfigError, match="resources.gpu"):
        sweep.resolve_gpu(
            load_ablation(SMOKE, ["resources.gpu=0.5", "resources.gpu_fallback=error"]), local=True
        )
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    monkeypatch.setattr(sweep, "mps_active", lambda: True)
    assert sweep.resolve_gpu(spec, local=True) == (0.5, None)


def test_packing_without_mps_is_pointed_out(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    monkeypatch.setattr(sweep, "mps_active", lambda: False)
    gpu, note = sweep.resolve_gpu(load_ablation(SMOKE, ["resources.gpu=0.125"]), local=True)
    assert (
        gpu == 0.125 and "8 trials share each GPU" in note and "nvidia-cuda-mps-control -d" in note
    )
    # a whole GPU per trial, or a cluster whose nodes the driver cannot see: nothing to say
    assert sweep.resolve_gpu(load_ablation(SMOKE, ["resources.gpu=1"]), local=True) == (1.0, None)
    assert sweep.resolve_gpu(load_ablation(SMOKE, ["resources.gpu=0.125"]), local=False) == (
        0.125,
        None,
    )
