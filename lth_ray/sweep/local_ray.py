"""A local Ray that only this machine can reach.

A local Ray started the ordinary way on Linux takes the machine's network address as its node
address, and its GCS, raylet and worker servers accept connections on every interface: anyone who
can reach the machine could attach a driver and run code in the sweep's processes. Ray's own
single-machine mode (the one it uses on macOS and Windows, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`)
takes 127.0.0.1 as the node address instead, and then every server it starts listens on loopback
only. `start` selects that mode unless the user asks for a reachable Ray (`--listen-all`).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only() -> None:
    """Make this process, and the Ray processes it starts, take 127.0.0.1 as the node address."""
    os.environ[SINGLE_MACHINE_ENV] = "0"  # inherited by the GCS, raylet and workers
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import: set it here too for this process


def start(num_cpus: int | None, listen_all: bool = False, **kwargs: Any) -> None:
    """`ray.init` of a new local Ray: on loopback unless `listen_all`."""
    import ray

    if not listen_all:
        loopback_only()
    ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)


def is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP/UDP socket these processes listen on."""
    import socket

    import psutil

    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.pid not in pids or not c.laddr:
            continue
        tcp_server = c.type == socket.SOCK_STREAM and c.status == psutil.CONN_LISTEN
        udp_bound = c.type == socket.SOCK_DGRAM and not c.raddr
        if tcp_server or udp_bound:
            out.append((c.pid, c.laddr.ip, c.laddr.port))
    return out
