"""The cluster path, as far as a machine without a cloud allows.

- cluster.yaml passes Ray's own validation (the JSON schema shipped with Ray, then `prepare_config`
  + `validate_config`, as `ray up` does), which rejects broken copies; and it has the shape the
  README promises (CPU head, spot GPU workers from 0, pinned versions, no credentials, MLflow).
- The head's MLflow start command from cluster.yaml, run here on loopback: it serves over HTTP and
  refuses foreign Host headers.
- The smoke sweep on a real multi-node Ray cluster on this machine (Ray's fake multi-node provider):
  the autoscaler starts GPU worker nodes for the trials and removes them when idle, trials spread
  over the workers and log to that MLflow server over HTTP, and a worker node killed mid-sweep loses
  no finished round.

Every process started here is ours: own temp dir, ports, loopback address and Ray auth token; it is
stopped by PID (never a global `ray stop`), also when a test fails.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
FAKE_YAML = Path(__file__).with_name("cluster_fake.yaml")
SMOKE = ROOT / "ablations" / "smoke.yaml"
PLUGIN_ABLATION = ROOT / "examples" / "plugin_ablation.yaml"
BIN = Path(sys.executable).parent
RAY = shutil.which("ray", path=str(BIN)) or shutil.which("ray") or "ray"
TRIAL_ACTOR = "ray::ImplicitFunc"  # process title of a Tune function-trainable actor
HEAD_NODE = "00000"  # the fake provider numbers nodes: the head's id ends in 00000


def load_cluster_yaml() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` checks: the shipped JSON schema on the file, then defaults filled in and checked."""
    import jsonschema
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


# ---------------------------------------------------------------------------------------------
# cluster.yaml, offline


def test_cluster_yaml_passes_ray_validation() -> None:
    prepared = ray_validate(load_cluster_yaml())
    assert prepared["provider"]["type"] == "aws"
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        for k in parents:
            c = c[k]
        if value is DELETE:
            del c[last]
        else:
            c[last] = value

    return mutate


DELETE = object()
BROKEN = {
    "typo": (_set("idle_timeout_minuts", 5), "Additional properties are not allowed"),
    "gpu-not-int": (
        _set("available_node_types/gpu_1x/resources/GPU", "one"),
        "is not of type 'integer'",
    ),
    "no-node-config": (
        _set("available_node_types/gpu_4x/node_config", DELETE),
        "'node_config' is a required",
    ),
    "head-type": (_set("head_node_type", "no_such_type"), "must be one of `available_node_types`"),
    "min-over-max": (
        _set("available_node_types/gpu_1x/min_workers", 99),
        "smaller than the sum of `min_workers`",
    ),
}


@pytest.mark.parametrize("name", BROKEN)
def test_ray_validation_rejects_a_broken_copy(name: str) -> None:
    import jsonschema

    mutate, message = BROKEN[name]
    config = load_cluster_yaml()
    mutate(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(message)):
        ray_validate(config)


def test_cluster_yaml_shape() -> None:
    import mlflow
    import ray

    c = load_cluster_yaml()
    types = c["available_node_types"]
    head = types[c["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != c["head_node_type"]}
    # CPU head on demand that runs no trials; spot GPU workers from zero, one- and multi-GPU types.
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert "InstanceMarketOptions" not in head["node_config"]
    gpus = sorted(w["resources"]["GPU"] for w in workers.values())
    assert gpus[0] == 1 and gpus[-1] > 1, gpus
    for name, w in workers.items():
        assert w["min_workers"] == 0, name
        assert w["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot", name
        assert "IamInstanceProfile" in w["node_config"], (
            f"{name}: workers need S3 for Tune checkpoints"
        )
    assert 0 < c["idle_timeout_minutes"] <= 10
    assert (
        c["provider"]["cache_stopped_nodes"] is False
    )  # `ray down` terminates, nothing left billed

    # No credentials anywhere in the file.
    text = CLUSTER_YAML.read_text()
    for pattern in (
        r"AKIA[0-9A-Z]{16}",
        r"(?i)aws_secret_access_key",
        r"(?i)aws_access_key_id",
        r"(?i)password\s*[:=]",
    ):
        assert not re.search(pattern, text), pattern

    # Every node installs the project with this machine's Ray and MLflow (ray up wants them equal).
    setup = " ".join(c["setup_commands"])
    assert f'"ray[default]=={ray.__version__}"' in setup
    assert f'"mlflow=={mlflow.__version__}"' in setup
    assert "[cluster]" in setup  # boto3 for the autoscaler and MLflow's S3 artifacts

    # GPU workers start CUDA MPS before Ray, so packed trials share the GPU instead of time-slicing.
    start = c["worker_start_ray_commands"]
    mps = [i for i, cmd in enumerate(start) if "nvidia-cuda-mps-control -d" in cmd]
    ray_start = [i for i, cmd in enumerate(start) if "ray start" in cmd]
    assert mps and ray_start and mps[0] < ray_start[0], start

    # MLflow: started on the head, bound to its private address, with allowed hosts.
    server = mlflow_command(c)
    assert '--host "$HEAD_IP"' in server and "0.0.0.0" not in server
    assert "--allowed-hosts" in server and "--artifacts-destination" in server


def test_mlflow_needs_a_password_and_workers_reach_only_the_sweep_bucket() -> None:
    c = load_cluster_yaml()
    # MLflow's basic-auth app, its admin user from the environment, no permission for anyone else.
    server = mlflow_command(c)
    assert "--app-name basic-auth" in server
    assert 'MLFLOW_AUTH_CONFIG_PATH="$HOME/mlflow/basic_auth.ini"' in server
    (ini,) = [x for x in c["head_start_ray_commands"] if "basic_auth.ini" in x and x != server]
    assert ini == "python -m lth_ray.mlflow_auth ~/mlflow/basic_auth.ini"
    assert c["file_mounts"]["~/.mlflow/credentials"] == "~/.lth_ray/mlflow_credentials"
    setup = " ".join(c["setup_commands"])

    # GPU workers: their own instance profile, whose policy reaches only the sweep's S3 prefix.
    (s3,) = re.findall(r"LTH_RAY_S3=s3://([^/']+)/([^'\s]+)", setup)
    bucket, prefix = s3
    workers = {k: v for k, v in c["available_node_types"].items() if k != c["head_node_type"]}
    for name, w in workers.items():
        assert w["node_config"]["IamInstanceProfile"] == {"Name": "lth-ray-worker"}, name
    policy = json.loads((ROOT / "docs" / "iam" / "worker-policy.json").read_text())
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        for a in actions:
            assert a.startswith("s3:") and "*" not in a, a  # no wildcard, nothing but S3
        for r in resources:
            assert r in (f"arn:aws:s3:::{bucket}/{prefix}/*", f"arn:aws:s3:::{bucket}"), r
            if r == f"arn:aws:s3:::{bucket}":  # listing the bucket: only under the prefix
                assert set(actions) <= {"s3:ListBucket", "s3:GetBucketLocation"}, actions
                if "s3:ListBucket" in actions:
                    prefixes = st["Condition"]["StringLike"]["s3:prefix"]
                    assert all(p.startswith(prefix) for p in prefixes), prefixes
    granted = {
        a
        for st in policy["Statement"]
        for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
    }
    assert {"s3:GetObject", "s3:PutObject", "s3:ListBucket"} <= granted  # Tune's checkpoints
    passing = json.loads((ROOT / "docs" / "iam" / "head-pass-worker-role.json").read_text())
    (st,) = passing["Statement"]
    assert st["Action"] == "iam:PassRole" and st["Resource"].endswith(":role/lth-ray-worker")


def test_node_setup_environment(tmp_path: Path) -> None:
    """What the setup leaves for the shells Ray opens on a node: `ray down` runs `ray stop` through
    Ray's ssh wrapper, so the venv's `ray` must be on that PATH; trials need the MLflow address."""
    from ray.autoscaler._private.command_runner import _with_interactive

    home = tmp_path / "home"
    (home / "venv" / "bin").mkdir(parents=True)
    stub = home / "venv" / "bin" / "ray"
    stub.write_text("#!/bin/sh\necho stub\n")
    stub.chmod(0o755)
    # Ubuntu's ~/.bashrc starts by returning from non-interactive shells.
    (home / ".bashrc").write_text('case $- in *i*) ;; *) return;; esac\nalias ll="ls -l"\n')
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "TERM": "dumb"}

    def remote(cmd: str) -> str:
        """Run cmd the way Ray's SSHCommandRunner does on a node: sshd hands the joined words to sh."""
        line = " ".join(_with_interactive(cmd))
        done = subprocess.run(
            ["/bin/sh", "-c", line], env=env, capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip()

    def setup(kind: str) -> None:
        c = load_cluster_yaml()
        env_file = [x for x in c["setup_commands"] if "lth_ray_env" in x]
        for cmd in env_file + c[f"{kind}_setup_commands"]:
            # Ray runs each command in a fresh shell that sources ~/.bashrc; RAY_HEAD_IP on workers.
            line = f"export RAY_HEAD_IP=10.1.2.3; source ~/.bashrc; {cmd}"
            subprocess.run(["bash", "-c", line], env=env, check=True, timeout=30)

    assert remote("command -v ray || echo missing") == "missing"  # what made `ray down` a no-op
    for _ in range(2):  # `ray up` reruns setup: it must stay idempotent
        setup("head")
    assert remote("command -v ray") == str(stub)
    assert remote("echo $RAY_AUTH_MODE") == "token"
    assert (home / ".bashrc").read_text().splitlines()[0] == ". ~/.lth_ray_env"
    assert (home / ".bashrc").read_text().count(".lth_ray_env") == 1
    head_ip = remote("echo $HEAD_IP")
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", head_ip), head_ip
    assert remote("echo $MLFLOW_TRACKING_URI") == f"http://{head_ip}:5000"
    setup("worker")
    assert remote("echo $MLFLOW_TRACKING_URI") == "http://10.1.2.3:5000"


# ---------------------------------------------------------------------------------------------
# Processes: ports, ownership, stopping by PID


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_processes(marker: str) -> dict[int, psutil.Process]:
    """Processes whose command line names our temp dir, and their descendants (Ray workers)."""
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid not in me and any(marker in a for a in p.info["cmdline"] or ()):
                found[p.pid] = p
                found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            continue
    return found


def stop(procs: list[psutil.Process], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after grace_s."""
    for p in procs:
        try:
            if grace_s > 0:
                p.terminate()
            else:
                p.kill()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=max(grace_s, 0.1))
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def stop_all(marker: str) -> None:
    """Stop everything of ours, again until nothing is left (a node may be starting as we stop)."""
    for _ in range(5):
        procs = list(own_processes(marker).values())
        if not procs:
            return
        stop(procs, grace_s=2.0)
        time.sleep(0.5)


def with_children(p: psutil.Process) -> list[psutil.Process]:
    try:
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return [p]


# ---------------------------------------------------------------------------------------------
# The head's MLflow server, started by cluster.yaml's own command line


def mlflow_command(config: dict[str, Any]) -> str:
    (cmd,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    return cmd


def mlflow_start(config: dict[str, Any]) -> str:
    """The head's commands that set up and start MLflow (its auth config, then the server)."""
    cmds = config["head_start_ray_commands"]
    return " && ".join(c for c in cmds if "basic_auth.ini" in c and "mlflow server" not in c) + (
        "\n" + mlflow_command(config)
    )


def http_status(
    url: str,
    host: str | None = None,
    auth: tuple[str, str] | None = None,
    method: str = "GET",
    data: bytes | None = None,
) -> int:
    headers = {"Host": host} if host else {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    req = urllib.request.Request(url, headers=headers, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:  # a password check takes a while
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@dataclass
class MlflowServer:
    url: str
    artifacts: Path


@pytest.fixture(scope="module")
def mlflow_server() -> Iterator[MlflowServer]:
    home = Path(tempfile.mkdtemp(prefix="lthm"))
    port = free_port()
    # What ~/.lth_ray_env gives every node; this process (and the Ray nodes it starts) logs with it.
    credentials = {
        "MLFLOW_TRACKING_USERNAME": "lth_ray",
        "MLFLOW_TRACKING_PASSWORD": os.urandom(12).hex(),
    }
    before = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)
    env = dict(
        os.environ,
        HOME=str(home),  # the command keeps its database and pid file under ~/mlflow
        HEAD_IP="127.0.0.1",
        MLFLOW_PORT=str(port),
        LTH_RAY_S3=str(home / "s3"),  # a folder stands in for the bucket
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Captured output: a command that leaves its I/O attached to the caller hangs here (and `ray up`).
        started = subprocess.run(
            ["bash", "-c", mlflow_start(load_cluster_yaml())],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 120
        while True:
            try:
                if http_status(f"{url}/health") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (home / "mlflow" / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield MlflowServer(url, home / "s3" / "mlflow-artifacts")
    finally:
        stop_all(str(home))
        shutil.rmtree(home, ignore_errors=True)
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_head_mlflow_server_serves_its_address_only(mlflow_server: MlflowServer) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    exp = client.create_experiment(f"probe-{os.getpid()}")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "x", 1.5, step=3)
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "x")] == [
        (3, 1.5)
    ]
    api = f"{mlflow_server.url}/api/2.0/mlflow/experiments/get?experiment_id={exp}"
    port = mlflow_server.url.rsplit(":", 1)[1]
    auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    assert http_status(api, auth=auth) == 200
    assert http_status(api, host=f"attacker.example:{port}", auth=auth) == 403  # --allowed-hosts
    # basic-auth: nothing is read, changed or proxied to the artifact store without the password
    assert http_status(api) == 401
    assert http_status(api, auth=(auth[0], "wrong")) == 401
    assert http_status(api, auth=("someone", auth[1])) == 401
    artifacts = f"{mlflow_server.url}/api/2.0/mlflow-artifacts/artifacts/probe.txt"
    assert http_status(artifacts, method="PUT", data=b"x") == 401
    assert not list(mlflow_server.artifacts.rglob("probe.txt"))


# ---------------------------------------------------------------------------------------------
# A multi-node cluster on this machine


@dataclass
class FakeCluster:
    root: Path
    address: str
    env: dict[str, str]

    def raylets(self) -> dict[str, psutil.Process]:
        """Live raylets of this cluster by node id."""
        out = {}
        for p in own_processes(str(self.root)).values():
            try:
                args = p.cmdline()
            except psutil.Error:
                continue
            if args and args[0].endswith("/raylet"):
                node = next((a.split("=", 1)[1] for a in args if a.startswith("--node_id=")), None)
                if node:
                    out[node] = p
        return out

    def trial_actors(self) -> dict[str, int]:
        """Node id -> Tune trial actors running on it now."""
        out = {}
        for node, raylet in self.raylets().items():
            try:
                out[node] = sum(c.name().startswith(TRIAL_ACTOR[:15]) for c in raylet.children())
            except psutil.Error:
                continue
        return out


@pytest.fixture
def fake_cluster() -> Iterator[FakeCluster]:
    root = Path(tempfile.mkdtemp(prefix="lthc"))  # short: Ray's unix sockets live under it
    port = free_port()
    config = yaml.safe_load(FAKE_YAML.read_text())
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    (root / "fake.yaml").write_text(yaml.safe_dump(config))
    (root / "token").write_text(os.urandom(16).hex())
    env = dict(
        os.environ,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # else Ray swaps 127.0.0.1 for the machine's address
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(root / "token"),
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.pop("RAY_ADDRESS", None)
    head_env = dict(
        env,
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
        AUTOSCALER_HEARTBEAT_TIMEOUT_S="5",  # a killed node is noticed in seconds, not 30 s
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    cmd = [
        RAY, "start", "--head",
        f"--autoscaling-config={root / 'fake.yaml'}",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={root / 'ray'}",
        "--num-cpus=1", "--num-gpus=0",  # the head runs no trials, as on AWS
        "--object-store-memory=100000000",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]  # fmt: skip
    try:
        started = subprocess.run(cmd, env=head_env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-3000:]
        yield FakeCluster(root, f"127.0.0.1:{port}", env)
    finally:
        stop_all(str(root))
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Watcher:
    """Samples the cluster's processes while the sweep runs: which worker nodes came up, which ran trials."""

    cluster: FakeCluster
    workers_seen: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    max_workers_alive: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stopped.is_set():
            actors = self.cluster.trial_actors()
            workers = {n for n in actors if not n.endswith(HEAD_NODE)}
            self.workers_seen |= workers
            self.max_workers_alive = max(self.max_workers_alive, len(workers))
            self.hosts |= {n for n, k in actors.items() if k}
            time.sleep(0.5)


def cluster_sweep(
    ablation: Path, sets: list[str], cluster: FakeCluster, server: MlflowServer
) -> list[str]:
    """The sweep's command line against the fake cluster, tracked by the test's MLflow server."""
    return [
        sys.executable, "-m", "lth_ray.sweep", str(ablation),
        *(a for s in sets for a in ("--set", s)),
        "--address", cluster.address,
        "--storage", str(cluster.root / "results"),
        "--tracking-uri", server.url,
        "--no-report",
        "--pending-timeout", "120",
    ]  # fmt: skip


def tune_failures(experiments: Path) -> int:
    """Trial attempts that died, from Tune's own experiment state."""
    total = 0
    for state in experiments.glob("*/experiment_state-*.json"):
        for _, run_state in json.loads(state.read_text())["trial_data"]:
            total += json.loads(run_state)["num_failures"]
    return total


def test_smoke_sweep_on_autoscaling_cluster_survives_a_lost_node(
    fake_cluster: FakeCluster, mlflow_server: MlflowServer
) -> None:
    from mlflow import MlflowClient

    from lth_ray.config.grid import expand_trials
    from lth_ray.config.load import load_ablation

    sets = ["resources.gpu=0.25"]  # 4 trials per (fake) GPU: two worker nodes for the sweep
    spec = load_ablation(SMOKE, sets)
    n_trials, rounds = len(expand_trials(spec)), spec.prune.rounds + 1
    root = fake_cluster.root
    cmd = cluster_sweep(SMOKE, sets, fake_cluster, mlflow_server)
    watcher = Watcher(fake_cluster)
    threading.Thread(target=watcher.run, daemon=True).start()
    lines: list[str] = []
    killed: dict[str, int] = {}
    t0 = time.monotonic()
    sweep = subprocess.Popen(
        cmd,
        cwd=root,
        env=fake_cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(300, lambda: stop(with_children(psutil.Process(sweep.pid))))
    watchdog.start()
    try:
        assert sweep.stdout is not None
        for line in sweep.stdout:
            lines.append(line)
            # Once two rounds are in, kill the worker node running the most trials: raylet and all.
            if not killed and sum(" round " in x and "test acc" in x for x in lines) >= 2:
                busy = {
                    n: k
                    for n, k in fake_cluster.trial_actors().items()
                    if k and not n.endswith(HEAD_NODE)
                }
                if busy:
                    victim = max(busy, key=busy.__getitem__)
                    killed[victim] = busy[victim]
                    stop(with_children(fake_cluster.raylets()[victim]), grace_s=0)
        rc = sweep.wait(timeout=60)
    finally:
        watchdog.cancel()
        if sweep.poll() is None:
            stop(with_children(psutil.Process(sweep.pid)))
    sweep_s = time.monotonic() - t0
    out = "".join(lines)

    # Scale-down: idle workers go (idle timeout 6 s); the head stays.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
        not n.endswith(HEAD_NODE) for n in fake_cluster.raylets()
    ):
        time.sleep(1)
    watcher.stopped.set()
    left = sorted(fake_cluster.raylets())
    print(
        f"sweep {sweep_s:.0f} s, idle workers gone {time.monotonic() - t0 - sweep_s:.0f} s later; "
        f"worker nodes {len(watcher.workers_seen)} (at most {watcher.max_workers_alive} at once), "
        f"ran trials {len(watcher.hosts)}, killed {killed}"
    )

    assert rc == 0, out[-4000:]
    assert f"{n_trials}/{n_trials} trials complete" in out, out[-4000:]
    # shared work: trunks trained round 0 once; the kill came while controls waited on their tickets
    assert "work shared" in out and out.count(" done: round 0 of ") >= 2, out[-4000:]
    assert killed, "no worker node was running trials to kill"
    assert tune_failures(root / "results" / spec.name) >= 1, "the kill interrupted no trial"
    assert watcher.max_workers_alive >= 2, "the autoscaler never ran two workers"
    assert len(watcher.hosts) >= 2, "trials did not spread over worker nodes"
    assert not any(n.endswith(HEAD_NODE) for n in watcher.hosts), "a trial ran on the GPU-less head"
    assert [n[-5:] for n in left] == [HEAD_NODE], f"idle workers were not removed: {left}"

    # MLflow (over HTTP): one child run per trial, each round exactly once, artifacts in the "bucket".
    client = MlflowClient(mlflow_server.url)
    sweep_id = re.search(r"sweep (\S+):", out).group(1)
    exp = client.get_experiment_by_name(spec.name)
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`lth_ray.role` = 'trial' and tags.`lth_ray.sweep` = '{sweep_id}'",
    )
    assert len(runs) == n_trials and len({r.data.tags["lth_ray.trial"] for r in runs}) == n_trials
    for r in runs:
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "test_acc"))
        assert steps == list(range(rounds)), (r.data.tags["lth_ray.trial"], steps)
        assert r.info.status == "FINISHED"
    assert len(list(mlflow_server.artifacts.rglob("round_*.pt"))) >= n_trials * rounds


def test_a_plugin_models_trial_runs_on_a_worker_node(
    fake_cluster: FakeCluster, mlflow_server: MlflowServer
) -> None:
    """The driver imports the ablation's plugin for validation; the trials on the worker nodes
    import it themselves before they build its model."""
    from mlflow import MlflowClient

    root = fake_cluster.root
    sets = ["resources.gpu=0.5", "prune.rounds=1", "train.initial=1ep", "grid.seed=[0]"]
    cmd = cluster_sweep(PLUGIN_ABLATION, sets, fake_cluster, mlflow_server)
    watcher = Watcher(fake_cluster)
    threading.Thread(target=watcher.run, daemon=True).start()
    try:
        done = subprocess.run(
            cmd, cwd=root, env=fake_cluster.env, capture_output=True, text=True, timeout=400
        )
    finally:
        watcher.stopped.set()
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "3/3 trials complete" in out, out[-4000:]
    assert watcher.hosts and not any(n.endswith(HEAD_NODE) for n in watcher.hosts), watcher.hosts
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("plugin_demo")
    runs = client.search_runs([exp.experiment_id], "tags.`lth_ray.role` = 'trial'")
    assert {r.data.params["model.arch"] for r in runs} == {"tiny_mlp"}
    assert {r.data.tags["criterion"] for r in runs} >= {"magnitude_times_movement"}
    assert all(r.info.status == "FINISHED" for r in runs)
