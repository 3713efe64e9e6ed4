"""Resource blobs: the cache first, then the bus, always verified against the manifest ID.

A blob is stored under its manifest ID, the sha256 of its content, so it is
verified on the way in from the bus and again when read from the cache; a
mismatch is a :class:`BlobError`, never a silent apply of the wrong thing.
Concurrent requests for one blob share a single download, which matters when
a simulated fleet of thousands of agents receives the same rollout at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from edgeagent.errors import BlobError
from edgeagent.store import BlobCache
from protocol.ids import manifest_id_of_blob

log = structlog.get_logger(__name__)


class BlobSource(Protocol):
    async def fetch_blob(self, manifest_id: str) -> bytes:
        """The blob from the bus; BlobError (transient) if missing or the bus is down."""
        ...


class BlobProvider(Protocol):
    async def get(self, manifest_id: str) -> bytes: ...


WAITERS_PER_TURN = 500  # waiters on one download woken per turn of the event loop


@dataclass
class _Download:
    """One blob download in progress; its outcome for those who waited on it."""

    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    blob: bytes | None = None
    error: BaseException | None = None

    def wake(self, start: int = 0) -> None:
        """Wake the waiters, :data:`WAITERS_PER_TURN` per turn of the event loop.

        Agents sharing a connection wait on its one download: woken all at once,
        tens of thousands of them applied in a single turn of the loop, and no
        timer, report or acknowledgement moved for seconds. A batch per turn
        lets the first ones observe and report while the later ones apply.
        """
        end = start + WAITERS_PER_TURN
        for waiter in self.waiters[start:end]:
            if not waiter.done():  # a cancelled waiter leaves the rest alone
                waiter.set_result(None)
        if end < len(self.waiters):
            asyncio.get_running_loop().call_soon(self.wake, end)


class Blobs:
    """Verified blobs from a cache, else a source; downloads are coalesced."""

    def __init__(self, cache: BlobCache, source: BlobSource, *, timeout: float) -> None:
        self._cache = cache
        self._source = source
        self._timeout = timeout
        self._inflight: dict[str, _Download] = {}
        self.downloads = 0

    async def get(self, manifest_id: str) -> bytes:
        cached = self._cache.get(manifest_id)
        if cached is not None:
            if manifest_id_of_blob(cached) == manifest_id:
                return cached
            log.warning("blob.cache_corrupt", manifest_id=manifest_id)
        pending = self._inflight.get(manifest_id)
        if pending is not None:
            # A future of its own, not the download's: cancelling a waiter
            # leaves the download and the other waiters alone.
            waiter = asyncio.get_running_loop().create_future()
            pending.waiters.append(waiter)
            await waiter
            if pending.blob is None:
                assert pending.error is not None
                raise pending.error
            return pending.blob
        download = self._inflight[manifest_id] = _Download()
        try:
            download.blob = await self._download(manifest_id)
            return download.blob
        except Exception as exc:
            download.error = exc
            raise
        finally:
            del self._inflight[manifest_id]
            if download.blob is None and download.error is None:  # cancelled
                download.error = BlobError(
                    f"download of resources {manifest_id} was cancelled", manifest_id=manifest_id
                )
            download.wake()

    async def _download(self, manifest_id: str) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                blob = await self._source.fetch_blob(manifest_id)
        except TimeoutError as exc:
            raise BlobError(
                f"download of resources {manifest_id} timed out after {self._timeout:.0f} s",
                manifest_id=manifest_id,
            ) from exc
        self.downloads += 1
        actual = manifest_id_of_blob(blob)
        if actual != manifest_id:
            raise BlobError(
                f"resources stored as {manifest_id} have digest {actual}: refusing them",
                manifest_id=manifest_id,
            )
        self._cache.put(manifest_id, blob)
        return blob
