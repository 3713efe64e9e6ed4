"""Following a KV bucket: its current content first, then every change.

Every control-plane replica keeps bundles, groups and the cluster registry in
memory; writes go to KV (by whichever replica served the request) and come
back to every replica through a watch, so all replicas converge on the same
state and the KV buckets stay the only source of truth.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

log = structlog.get_logger(__name__)

# Called with (key, value); value is None when the key was deleted.
Apply = Callable[[str, bytes | None], Awaitable[None]]


class BucketFollower:
    def __init__(self, kv: KeyValue, apply: Apply, *, name: str) -> None:
        self._kv = kv
        self._apply = apply
        self._name = name
        self._watcher: KeyValue.KeyWatcher | None = None

    async def load(self) -> int:
        """Apply the bucket's current content; returns how many keys it holds."""
        self._watcher = await self._kv.watchall()
        loaded = 0
        while True:
            entry = await anext(self._watcher)
            if entry is None:  # the watcher's marker: the current content is done
                return loaded
            await self._entry(entry)
            loaded += 1

    async def follow(self) -> None:
        """Apply changes forever (run as a supervised task after :meth:`load`)."""
        if self._watcher is None:
            raise RuntimeError("load() first")
        async for entry in self._watcher:
            if entry is not None:
                await self._entry(entry)

    async def _entry(self, entry: KeyValue.Entry) -> None:
        deleted = entry.operation in (KV_DEL, KV_PURGE)
        try:
            await self._apply(entry.key, None if deleted else entry.value)
        except ValueError as exc:  # a record this version cannot read: skip it, loudly
            log.error("kv.entry.unreadable", bucket=self._name, key=entry.key, error=str(exc))
        except Exception as exc:  # e.g. a publish that failed: the resync loop retries it
            log.warning("kv.entry.apply_failed", bucket=self._name, key=entry.key, error=repr(exc))

    async def stop(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()  # type: ignore[no-untyped-call]
