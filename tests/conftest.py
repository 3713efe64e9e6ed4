"""Fixtures shared by every tier: a real nats-server per test on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.embedded import EmbeddedNats


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A JetStream-enabled nats-server on 127.0.0.1 and a port of its own choosing."""
    server = EmbeddedNats(store_dir=tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
