"""Integration fixtures: a control plane on a real nats-server, and a client connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from controlplane.embedded import EmbeddedNats
from controlplane.server import ControlPlane
from controlplane.settings import ServerSettings


@pytest.fixture
def cp_settings(nats_server: EmbeddedNats) -> ServerSettings:
    return ServerSettings(
        nats_url=nats_server.url,
        shards=4,
        heartbeat_timeout=1.5,
        offline_check_interval=0.2,
        startup_grace=0.0,
    )


@pytest.fixture
async def control_plane(cp_settings: ServerSettings) -> AsyncIterator[ControlPlane]:
    async with ControlPlane(cp_settings) as plane:
        yield plane


async def _connection(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    async for client in _connection(nats_server):
        yield client


@pytest.fixture
async def publisher_nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    """A second connection, for a test that publishes as the control plane would."""
    async for client in _connection(nats_server):
        yield client
