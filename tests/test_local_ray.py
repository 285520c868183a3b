"""A local Ray listens on loopback only: no server it starts accepts connections from elsewhere."""

from __future__ import annotations

import shutil
import tempfile

import psutil
import pytest

from lth_ray.sweep import local_ray


def test_loopback_addresses_are_recognised():
    for host in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "127.0.1.1"):
        assert local_ray.is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.0.2.2", "10.0.0.1", "::ffff:10.0.0.1", "localhost", ""):
        assert not local_ray.is_loopback(host), host


@pytest.fixture
def ray_on_loopback(monkeypatch):
    import ray
    from ray._private import ray_constants

    monkeypatch.setenv(local_ray.SINGLE_MACHINE_ENV, "1")  # restored afterwards, as is:
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    temp = tempfile.mkdtemp(prefix="lthray", dir="/tmp")  # short: unix socket paths
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    local_ray.start(1, _temp_dir=temp, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_local_ray_listens_on_loopback_only(ray_on_loopback):
    ray = ray_on_loopback

    @ray.remote
    def pid() -> int:
        return psutil.Process().pid

    @ray.remote
    class Actor:
        def pid(self) -> int:
            return psutil.Process().pid

    actor = Actor.remote()
    workers = {ray.get(pid.remote()), ray.get(actor.pid.remote())}
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    assert workers <= pids
    names = {psutil.Process(p).name() for p in pids if psutil.pid_exists(p)}
    assert {"gcs_server", "raylet"} <= names, names
    sockets = local_ray.listening(pids)
    servers = {psutil.Process(p).name() for p, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= servers, sockets  # the check sees Ray's servers ...
    open_beyond = [(psutil.Process(p).name(), host, port) for p, host, port in sockets]
    open_beyond = [s for s in open_beyond if not local_ray.is_loopback(s[1])]
    assert not open_beyond, f"listening beyond loopback: {open_beyond}"  # ... all on loopback
    assert ray.util.get_node_ip_address() == "127.0.0.1"
