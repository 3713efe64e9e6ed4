"""A rollout survives the loss of a NATS node: 3-node cluster, JetStream R3 (invariant 4)."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from nats.js.errors import APIError, ServiceUnavailableError

from controlplane.embedded import EmbeddedNats
from controlplane.server import ControlPlane
from controlplane.settings import ServerSettings
from edgeagent.settings import AgentSettings
from edgeagent.simfleet import SimulatedFleet
from protocol import admin, subjects
from protocol.states import State
from tests.integration import cp_helpers as h

CLUSTERS = 40
CLUSTER_READY_TIMEOUT = 30.0


async def wait_for_jetstream(url: str) -> None:
    """A fresh cluster elects its JetStream meta leader after a moment."""
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + CLUSTER_READY_TIMEOUT
        while True:
            try:
                await nc.jetstream().account_info()
                return
            except (ServiceUnavailableError, APIError, TimeoutError, nats.errors.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def stream_leader(url: str, stream: str) -> str:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None and info.cluster.leader
        return info.cluster.leader
    finally:
        await nc.close()


@pytest.mark.timeout(180)
async def test_rollout_completes_when_the_stream_leader_dies(
    nats_cluster: list[EmbeddedNats],
) -> None:
    urls = ",".join(s.url for s in nats_cluster)
    await wait_for_jetstream(nats_cluster[0].url)
    settings = ServerSettings(
        nats_url=urls, replicas=3, shards=4, heartbeat_timeout=60, lease_ttl=3.0
    )
    async with ControlPlane(settings) as plane:
        client = await nats.connect(servers=urls.split(","), max_reconnect_attempts=-1)
        try:
            token = await h.create_token(client)
            # Slow readiness keeps the rollout in flight while the node dies.
            agent_settings = AgentSettings(
                status_interval=0.3, heartbeat_interval=1.0, sim_readiness_delay=3.0
            )
            async with SimulatedFleet(
                count=CLUSTERS, token=token, settings=agent_settings, url=urls, connections=3
            ) as fleet:
                assert not fleet.failed
                applied = await h.apply_bundle(client, "web", h.resources("1"))
                assert isinstance(applied, admin.BundleApplied)

                # Mid-rollout, kill the node leading the status stream, as a crash would.
                before = (await h.bundles(client))["web"].states.get(State.READY, 0)
                assert before < CLUSTERS
                leader = await stream_leader(nats_cluster[0].url, subjects.STATUS_STREAM)
                victim = next(s for s in nats_cluster if f"n{nats_cluster.index(s)}" == leader)
                await victim.kill()

                deadline = time.monotonic() + 90
                while True:
                    try:
                        summary = (await h.bundles(client))["web"]
                        if summary.states == {State.READY: CLUSTERS}:
                            break
                    except (nats.errors.TimeoutError, TimeoutError, nats.errors.NoRespondersError):
                        pass  # the control plane is reconnecting
                    assert time.monotonic() < deadline, "rollout did not complete"
                    await asyncio.sleep(0.5)
                assert plane.fleet.leader
        finally:
            await client.close()
