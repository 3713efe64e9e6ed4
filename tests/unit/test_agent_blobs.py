"""Blob downloads: verified, cached, and shared by everyone asking at once."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from edgeagent.blobs import WAITERS_PER_TURN, Blobs
from edgeagent.errors import BlobError
from edgeagent.store import MemoryBlobCache
from protocol.ids import manifest_id_of_blob

BLOB = b"apiVersion: v1\nkind: ConfigMap\n"
MANIFEST = manifest_id_of_blob(BLOB)


class SlowSource:
    """Answers once ``release`` is set; counts the downloads asked of it."""

    def __init__(self, blob: bytes = BLOB, error: Exception | None = None) -> None:
        self.blob = blob
        self.error = error
        self.fetches = 0
        self.release = asyncio.Event()

    async def fetch_blob(self, manifest_id: str) -> bytes:
        self.fetches += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.blob


async def test_a_thousand_concurrent_gets_are_one_download_then_the_cache() -> None:
    source, cache = SlowSource(), MemoryBlobCache()
    blobs = Blobs(cache, source, timeout=5)
    waiters = [asyncio.create_task(blobs.get(MANIFEST)) for _ in range(1000)]
    await asyncio.sleep(0)
    source.release.set()
    assert set(await asyncio.gather(*waiters)) == {BLOB}
    assert source.fetches == 1 and blobs.downloads == 1
    assert cache.get(MANIFEST) == BLOB
    assert await blobs.get(MANIFEST) == BLOB
    assert source.fetches == 1


async def test_a_failed_download_fails_every_waiter_and_the_next_get_retries() -> None:
    source = SlowSource(error=BlobError("bus down", manifest_id=MANIFEST))
    blobs = Blobs(MemoryBlobCache(), source, timeout=5)
    waiters = [asyncio.create_task(blobs.get(MANIFEST)) for _ in range(3)]
    await asyncio.sleep(0)
    source.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, BlobError) and "bus down" in str(r) for r in results)
    source.error = None
    assert await blobs.get(MANIFEST) == BLOB
    assert source.fetches == 2


async def test_cancelling_the_downloader_fails_waiters_with_a_blob_error_not_a_cancel() -> None:
    source = SlowSource()
    blobs = Blobs(MemoryBlobCache(), source, timeout=5)
    first = asyncio.create_task(blobs.get(MANIFEST))
    await asyncio.sleep(0)
    second = asyncio.create_task(blobs.get(MANIFEST))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(BlobError, match="cancelled"):
        await second
    assert first.cancelled()


async def test_cancelling_a_waiter_leaves_the_download_to_the_others() -> None:
    source = SlowSource()
    blobs = Blobs(MemoryBlobCache(), source, timeout=5)
    first = asyncio.create_task(blobs.get(MANIFEST))
    await asyncio.sleep(0)
    quitter = asyncio.create_task(blobs.get(MANIFEST))
    stayer = asyncio.create_task(blobs.get(MANIFEST))
    await asyncio.sleep(0)
    quitter.cancel()
    await asyncio.sleep(0)
    source.release.set()
    assert await first == BLOB and await stayer == BLOB
    assert quitter.cancelled()


async def test_a_blob_that_does_not_match_its_manifest_is_refused_and_not_cached() -> None:
    source = SlowSource(blob=b"something else")
    source.release.set()
    cache = MemoryBlobCache()
    with pytest.raises(BlobError, match="refusing"):
        await Blobs(cache, source, timeout=5).get(MANIFEST)
    assert cache.get(MANIFEST) is None


async def test_waiters_on_one_download_are_woken_a_batch_per_turn() -> None:
    # Thousands of agents wait on their connection's download: other work (their
    # timers, reports, acknowledgements) must run between the batches woken.
    source = SlowSource()
    blobs = Blobs(MemoryBlobCache(), source, timeout=5)
    total = 3 * WAITERS_PER_TURN + 1
    got: list[bytes] = []

    async def agent() -> None:
        got.append(await blobs.get(MANIFEST))

    agents = [asyncio.create_task(agent()) for _ in range(total)]
    await asyncio.sleep(0)
    seen_between: list[int] = []

    async def other_work() -> None:
        while len(got) < total:
            seen_between.append(len(got))
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_work())
    source.release.set()
    await asyncio.gather(*agents, ticker)
    assert got == [BLOB] * total
    seen_between.append(len(got))
    woken_per_turn = [b - a for a, b in itertools.pairwise(seen_between)]
    assert max(woken_per_turn) <= WAITERS_PER_TURN + 1, woken_per_turn


async def test_a_cancelled_waiter_leaves_the_others_their_blob() -> None:
    source = SlowSource()
    blobs = Blobs(MemoryBlobCache(), source, timeout=5)
    waiters = [asyncio.create_task(blobs.get(MANIFEST)) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[1].cancel()
    source.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert results[0] == BLOB and results[2] == BLOB
    assert isinstance(results[1], asyncio.CancelledError)
