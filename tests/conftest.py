"""Fixtures shared by every tier: a real nats-server per test on a free port."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from controlplane.embedded import EmbeddedNats


@pytest.fixture(autouse=True)
def _fresh_structlog() -> None:
    """Every test starts with structlog's defaults, whatever an earlier test configured.

    A command run in-process configures logging for the process; left alone,
    later tests would log into that test's (by then closed) captured stream.
    """
    structlog.reset_defaults()


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A JetStream-enabled nats-server on 127.0.0.1 and a port of its own choosing."""
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[list[EmbeddedNats]]:
    """Three JetStream nats-servers routed into one cluster, all on 127.0.0.1."""
    cluster_ports = [_free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
    servers = []
    for i, port in enumerate(cluster_ports):
        args = ["--server_name", f"n{i}", "--cluster_name", "shoal-test"]
        args += ["--cluster", f"nats://127.0.0.1:{port}", "--routes", routes]
        servers.append(EmbeddedNats(store_dir=tmp_path / f"n{i}", extra_args=args))
    try:
        for server in servers:
            await server.start()
        yield servers
    finally:
        for server in servers:
            await server.stop()
