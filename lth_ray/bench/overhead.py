"""Ray + MLflow overhead of a short real sweep: its wall time against its trials' own time.

The sweep runs as a subprocess (`python -m lth_ray.sweep`, its own Ray and a fresh MLflow sqlite
store in a temporary folder, trials one at a time so that times add up), and the trials' per-round
`train_seconds` (training steps) and `round_seconds` (the whole round in the trial: training,
evaluation, pruning) are read back from MLflow. Ray and MLflow are imported only here and only when
this runs, so the throughput benchmark works on machines without them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from lth_ray import schema


def missing_packages() -> list[str]:
    return [m for m in ("ray", "mlflow") if importlib.util.find_spec(m) is None]


def sweep_ablation(
    device: str, trials: int, epochs: int, rounds: int, gpu: float, quick: bool
) -> dict[str, Any]:
    """A small real ablation: Conv-4 on CIFAR-shaped synthetic data (a tiny net in quick mode)."""
    shape = [3, 16, 16] if quick else [3, 32, 32]
    return {
        "name": "bench_overhead",
        "description": "lth_ray.bench: Ray + MLflow overhead",
        "seed": 0,
        "dataset": {
            "name": "synthetic",
            "val_size": 100 if quick else 2000,
            "synthetic_train": 400 if quick else 22_000,
            "synthetic_test": 100 if quick else 2000,
            "synthetic_shape": shape,
        },
        "model": {
            "arch": "conv2" if quick else "conv4",
            "width": 0.125 if quick else 1.0,
            "padding": "same",
        },
        "train": {
            "batch_size": 50 if quick else 60,
            "initial": f"{epochs}ep",
            "retrain": f"{epochs}ep",
            "device": device,
        },
        "prune": {"criterion": "magnitude", "rounds": rounds},
        "grid": {"seed": list(range(trials))},
        "resources": {"cpu": 1, "gpu": gpu},
        "tune": {"max_concurrent": 1},
    }


def _read_trials(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id], f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_TRIAL}'"
    )
    out = []
    for run in runs:
        row: dict[str, Any] = {"rounds": 0.0, "train_seconds": 0.0, "round_seconds": 0.0}
        row[schema.BOOKKEEPING_METRIC] = 0.0
        row["energy_wh"] = run.data.metrics.get("energy_wh")  # NVML, where the GPU has a counter
        row["system_metrics"] = sorted(k for k in run.data.metrics if k.startswith("system/"))
        for key in ("train_seconds", "round_seconds", schema.BOOKKEEPING_METRIC):
            history = client.get_metric_history(run.info.run_id, key)
            row[key] = float(sum(m.value for m in history))
            row["rounds"] = max(row["rounds"], float(len(history)))
        out.append(row)
    return out


# A whole trial of the study's protocol: 26 + 15 x 25 epochs of 45,000 images in 16 rounds. The
# sweep's fixed costs per trial and per round are projected onto it at the trials' measured speed.
STUDY_TRIAL_IMAGES = (26 + 15 * 25) * 45_000
STUDY_ROUNDS = 16


def summarise(
    wall_s: float,
    trials: list[dict[str, Any]],
    fit_s: float | None = None,
    images: int | None = None,
) -> dict[str, Any]:
    """Overhead = wall time / the trials' training time - 1, and where the rest of the time went.

    A short sweep is dominated by fixed costs, so the parts are kept apart for extrapolation:
    `startup_s` (interpreter, imports, Ray start and stop: wall - Tune's fit, once per sweep),
    `per_round_bookkeeping_s` (each round's MLflow writes, checkpoint and Tune report, as the
    trials measure it), `per_trial_fixed_s` (the rest inside Tune but outside the rounds: actor
    start, data, opening and closing the MLflow run) and `in_trial_eval_prune_s` (the trials' own
    evaluation and pruning, which is not Ray or MLflow). With `images` (training images of all
    trials) the Tune + MLflow part is projected onto one trial of the study's protocol at the
    trials' measured training speed: (fixed + 16 x per round) / its training time.
    """
    train = sum(t["train_seconds"] for t in trials)
    rounds = sum(t["round_seconds"] for t in trials)
    bookkeeping = sum(t.get("bookkeeping_seconds", 0.0) for t in trials)
    out: dict[str, Any] = {
        "trials": len(trials),
        "rounds": int(sum(t["rounds"] for t in trials)),
        "sweep_wall_s": wall_s,
        "tune_fit_s": fit_s,
        "sum_train_seconds": train,
        "sum_round_seconds": rounds,
        "sum_bookkeeping_seconds": bookkeeping,
    }
    if train > 0:
        out["overhead"] = wall_s / train - 1.0
        out["overhead_ray_mlflow"] = (wall_s - rounds) / train
        out["in_trial_eval_prune_s"] = rounds - train
        out["outside_trials_s"] = wall_s - rounds
    energy = [t["energy_wh"] for t in trials if t.get("energy_wh") is not None]
    if energy:
        out["energy_wh_per_trial"] = energy
    system = sorted({k for t in trials for k in t.get("system_metrics", [])})
    if system:
        out["system_metrics_logged"] = system
    if fit_s is not None and trials:
        out["startup_s"] = wall_s - fit_s
        out["per_trial_s"] = (fit_s - rounds) / len(trials)
        if out["rounds"] > 0:
            out["per_round_bookkeeping_s"] = bookkeeping / out["rounds"]
            out["per_trial_fixed_s"] = (fit_s - rounds - bookkeeping) / len(trials)
        if images and train > 0 and out["rounds"] > 0:
            rate = images / train
            out["train_images_per_s"] = rate
            out["study_trial_train_s"] = STUDY_TRIAL_IMAGES / rate
            out["study_trial_overhead_s"] = (
                out["per_trial_fixed_s"] + STUDY_ROUNDS * out["per_round_bookkeeping_s"]
            )
            out["projected_study_overhead"] = (
                out["study_trial_overhead_s"] / out["study_trial_train_s"]
            )
    return out


def sharing_ablation(device: str, epochs: int, rounds: int, gpu: float, quick: bool) -> dict:
    """The overhead sweep as a small study: 2 criteria, a one-shot baseline and a reinit control
    per ticket, one seed; the trials share one dense round 0 and the control its ticket's masks."""
    spec = sweep_ablation(device, 1, epochs, rounds, gpu, quick)
    spec["name"] = "bench_sharing"
    spec["grid"] = {"prune.criterion": ["magnitude", "random"]}
    spec["baselines"] = {"one_shot": True}
    spec["controls"] = {"kinds": ["reinit"], "criteria": ["magnitude"]}
    spec["tune"] = {}
    return spec


def measure_sharing(
    device: str = "cpu",
    epochs: int = 1,
    rounds: int = 1,
    gpu: float = 0.0,
    quick: bool = False,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Wall time of one short study with its shared work computed once, then with every trial
    computing everything itself (`--no-share`), in one run."""
    out: dict[str, Any] = {}
    for mode, extra in (("shared", []), ("unshared", ["--no-share"])):
        r = measure_overhead(
            device, 1, epochs, rounds, gpu, quick, timeout / 2, spec=sharing_ablation(
                device, epochs, rounds, gpu, quick
            ), extra_args=extra,
        )  # fmt: skip
        if "sweep_wall_s" not in r:
            return r
        out[f"wall_{mode}_s"] = r["sweep_wall_s"]
        out[f"trials_{mode}"] = r.get("trials")
        if mode == "shared":
            out["plan"] = r.get("plan")
    out["wall_ratio"] = out["wall_shared_s"] / out["wall_unshared_s"]
    return out


def measure_overhead(
    device: str = "cpu",
    trials: int = 1,
    epochs: int = 1,
    rounds: int = 1,
    gpu: float = 0.0,
    quick: bool = False,
    timeout: float = 600.0,
    workdir: str | None = None,
    spec: dict[str, Any] | None = None,
    extra_args: list[str] | None = None,
    num_cpus: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Run the sweep (on a local Ray of `num_cpus` slots, default up to 4, or on the cluster at
    `address`); returns the overhead summary, or {'skipped': why} / {'error': why}."""
    missing = missing_packages()
    if missing:
        return {"skipped": f"{' and '.join(missing)} not installed here (the sweep needs them)"}
    with tempfile.TemporaryDirectory(prefix="lth_bench_", dir=workdir) as tmp:
        folder = Path(tmp)
        spec = spec or sweep_ablation(device, trials, epochs, rounds, gpu, quick)
        ablation = folder / f"{spec['name']}.yaml"
        ablation.write_text(yaml.safe_dump(spec))
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        cmd = [
            sys.executable,
            "-m",
            "lth_ray.sweep",
            str(ablation),
            "--no-report",
            "--tracking-uri",
            uri,
            "--storage",
            str(folder / "tune"),
            *(
                ["--address", address]
                if address
                else ["--num-cpus", str(num_cpus or max(1, min(os.cpu_count() or 1, 4)))]
            ),
            *(extra_args or []),
        ]
        env = dict(os.environ, LTH_RAY_TMPDIR=os.environ.get("LTH_RAY_TMPDIR", str(folder / "ray")))
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return {
                "skipped": f"the sweep did not finish within {timeout:.0f} s (budget of this run); not measured"
            }
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-5:])
            return {"error": f"sweep exited with {proc.returncode}: {tail}"}
        m = re.search(r"trials complete in ([0-9.]+) s", output)
        data = spec["dataset"]
        per_round = epochs * (data["synthetic_train"] - data["val_size"])
        found = _read_trials(uri, spec["name"])
        summary = summarise(
            wall,
            found,
            float(m.group(1)) if m else None,
            images=int(sum(t["rounds"] for t in found) * per_round),
        )
        planned = re.search(r"planned epochs: .*", output)
        summary.update(
            plan=planned.group(0) if planned else None,
            device=device,
            gpu_per_trial=gpu,
            epochs_per_round=epochs,
            command="python -m lth_ray.sweep (subprocess)",
        )
        return summary


def _session_pids(sid: int) -> list[int]:
    """Processes of session `sid` (Ray puts its workers in process groups of their own)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the sweep and everything it started: the sweep runs in a session of its own."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=3)
    for pid in _session_pids(proc.pid):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=3)
