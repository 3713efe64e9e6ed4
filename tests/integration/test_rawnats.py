"""The raw NATS reference of the rollout benchmark, against a real nats-server."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import rawnats
from benchmarks.rawnats import RawNatsError, raw_nats_seconds
from benchmarks.rollout import raw_reference
from controlplane.embedded import EmbeddedNats


async def reference(url: str, *, clusters: int, status_count: int, timeout: float) -> float:
    """The rollout's message shape at ``clusters``: 134-byte class messages, 296-byte replies."""
    return await raw_nats_seconds(
        url,
        clusters=clusters,
        classes=3,
        connections=2,
        desired_size=134,
        status_size=296,
        status_count=status_count,
        timeout=timeout,
    )


async def test_replies_spread_over_several_collecting_connections_are_all_counted(
    nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rawnats, "SINK_REPLIES_PER_CONNECTION", 25)
    seconds = await reference(nats_server.url, clusters=60, status_count=60, timeout=10)
    assert 0 < seconds < 10


async def test_a_reference_that_cannot_finish_says_how_far_it_got(
    nats_server: EmbeddedNats,
) -> None:
    with pytest.raises(RawNatsError, match=r"of 200000 replies arrived within 0\.01 s"):
        await reference(nats_server.url, clusters=2000, status_count=200_000, timeout=0.01)


async def test_an_unmeasured_reference_is_an_error_in_the_result_not_a_crash(
    nats_server: EmbeddedNats,
) -> None:
    result: dict[str, Any] = {
        "clusters": 2000,
        "classes": 2,
        "connections": 2,
        "status_messages": 200_000,
        "seconds_to_all_ready": 5.0,
        "errors": [],
    }
    await raw_reference(nats_server.url, result, timeout=0.01)
    assert "raw_nats_seconds" not in result
    assert "ratio_to_raw" not in result
    assert len(result["errors"]) == 1
    assert result["errors"][0].startswith("raw NATS reference not measured: ")
