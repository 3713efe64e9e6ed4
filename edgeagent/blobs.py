"""Resource blobs: the cache first, then the bus, always verified against the manifest ID.

A blob is stored under its manifest ID, the sha256 of its content, so it is
verified on the way in from the bus and again when read from the cache; a
mismatch is a :class:`BlobError`, never a silent apply of the wrong thing.
Concurrent requests for one blob share a single download, which matters when
a simulated fleet of thousands of agents receives the same rollout at once.
"""

from __future__ import annotations

import asyncio
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


class Blobs:
    """Verified blobs from a cache, else a source; downloads are coalesced."""

    def __init__(self, cache: BlobCache, source: BlobSource, *, timeout: float) -> None:
        self._cache = cache
        self._source = source
        self._timeout = timeout
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        self.downloads = 0

    async def get(self, manifest_id: str) -> bytes:
        cached = self._cache.get(manifest_id)
        if cached is not None:
            if manifest_id_of_blob(cached) == manifest_id:
                return cached
            log.warning("blob.cache_corrupt", manifest_id=manifest_id)
        pending = self._inflight.get(manifest_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[manifest_id] = future
        try:
            blob = await self._download(manifest_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(blob)
            return blob
        finally:
            del self._inflight[manifest_id]

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
