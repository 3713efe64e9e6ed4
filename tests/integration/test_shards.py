"""Two control-plane replicas share the shards; either survives the other's death."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.aio.client import Client

from controlplane.embedded import EmbeddedNats
from controlplane.server import ControlPlane
from controlplane.settings import ServerSettings
from protocol import admin
from protocol.messages import RegisterReply
from protocol.states import State
from tests.integration import cp_helpers as h

SHARDS = 8
TTL = 1.5


def replica_settings(url: str, name: str) -> ServerSettings:
    return ServerSettings(
        nats_url=url,
        shards=SHARDS,
        lease_ttl=TTL,
        replica_id=name,
        heartbeat_timeout=30,
        startup_grace=30,
    )


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def start_replica_process(url: str, workdir: Path, name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SHOAL_SHARDS": str(SHARDS),
        "SHOAL_LEASE_TTL": str(TTL),
        "SHOAL_REPLICA_ID": name,
        "SHOAL_HEARTBEAT_TIMEOUT": "30",
        "SHOAL_LOG_LEVEL": "info",
    }
    with (workdir / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "shoal"), "server", "--nats-url", url],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


async def test_replicas_split_shards_and_survive_a_kill(
    nats_server: EmbeddedNats, nc: Client, tmp_path: Path
) -> None:
    proc = start_replica_process(nats_server.url, tmp_path, "replica-a")
    try:
        async with ControlPlane(replica_settings(nats_server.url, "replica-b")) as b:
            # Both replicas hold a share: neither has all shards, together they have all.
            async def split() -> bool:
                return 0 < len(b.leases.owned if b.leases else {}) < SHARDS

            await until(split, timeout=15, what="the shards to be split between replicas")

            token = await h.create_token(nc)
            regs = [await h.register(nc, token, f"shop-{i}") for i in range(24)]
            assert all(isinstance(r, RegisterReply) for r in regs)
            assert len({r.shard for r in regs if isinstance(r, RegisterReply)}) > 2
            applied = await h.apply_bundle(nc, "web", h.resources())
            assert isinstance(applied, admin.BundleApplied)
            deployment = applied.deployment_ids[0]
            for reg in regs:
                assert isinstance(reg, RegisterReply)
                await h.report(nc, reg, {"web": (deployment, State.READY)})

            async def all_ready() -> bool:
                summary = (await h.bundles(nc))["web"]
                return summary.states == {State.READY: 24}

            await until(all_ready, timeout=15, what="24 Ready across both replicas")

            # A crash, not a shutdown: replica A cannot hand its shards back.
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            killed_at = time.monotonic()
            # Until B takes them over, A's shards have nobody to answer for them,
            # and a status read says so rather than passing off a partial count.
            partial = await h.admin_call(nc, admin.BundleList())
            assert isinstance(partial, admin.BundleListReply)
            assert 0 < partial.missing_shards < SHARDS

            async def b_owns_all() -> bool:
                return len(b.leases.owned if b.leases else {}) == SHARDS

            await until(b_owns_all, timeout=TTL * 4 + 5, what="B to take over every shard")
            assert time.monotonic() - killed_at < TTL * 4 + 5
            assert b.leases is not None and b.leases.is_leader

            # Nothing lost, nothing counted twice: B recovered A's clusters' status.
            await until(all_ready, timeout=10, what="all 24 Ready after the takeover")
            whole = await h.admin_call(nc, admin.BundleList())
            assert isinstance(whole, admin.BundleListReply) and whole.missing_shards == 0
            clusters = await h.clusters(nc)
            assert all(c.bundles == {"web": State.READY} for c in clusters.values())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
