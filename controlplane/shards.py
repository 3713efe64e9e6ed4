"""Shard ownership: leases in a NATS KV bucket with a TTL.

Clusters hash into a fixed number of shards (``registry.shard_of``); each
control-plane replica ingests status and heartbeats only for the shards it
owns. Ownership is a key ``shard-<n>`` in the ``shoal-leases`` bucket, whose
TTL makes an unrenewed lease vanish: a replica that dies loses its shards
within the TTL and the others pick them up. Every operation is a
compare-and-set on the key's revision (``create`` for a free shard,
``update(last=revision)`` to renew), so two replicas never both believe they
won the same write; NATS is the consensus engine, shoal adds none.

Replicas announce themselves with ``replica-<id>`` keys under the same TTL.
Each takes at most its fair share (shards / live replicas, rounded up) and
releases the excess when more replicas appear, so load spreads without a
coordinator. One more key, ``leader``, elects the replica that publishes
desired state.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable

import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyValueError, NoKeysError
from nats.js.kv import KeyValue

log = structlog.get_logger(__name__)

LEASES_BUCKET = "shoal-leases"
LEADER_KEY = "leader"

ShardCallback = Callable[[int], Awaitable[None]]


def shard_key(shard: int) -> str:
    return f"shard-{shard}"


def replica_key(replica: str) -> str:
    return f"replica-{replica}"


async def leases_bucket(js: JetStreamContext, *, ttl: float, replicas: int) -> KeyValue:
    try:
        return await js.key_value(LEASES_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=LEASES_BUCKET,
                history=1,
                ttl=ttl,
                storage=StorageType.FILE,
                replicas=replicas,
            )
        )


class ShardLeases:
    """Acquire, renew and release shard leases; tell the owner what it gained or lost."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        replica: str,
        shards: int,
        ttl: float,
        on_acquire: ShardCallback,
        on_release: ShardCallback,
        on_leadership: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._kv = kv
        self.replica = replica
        self._shards = shards
        self._ttl = ttl
        self._on_acquire = on_acquire
        self._on_release = on_release
        self._on_leadership = on_leadership
        self.owned: dict[int, int] = {}  # shard -> revision of our lease
        self.leader_revision: int | None = None
        self._presence_revision: int | None = None

    @property
    def is_leader(self) -> bool:
        return self.leader_revision is not None

    @property
    def interval(self) -> float:
        """Renew three times per TTL, so one lost round trip does not lose a lease."""
        return self._ttl / 3

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except KeyValueError as exc:
                log.warning("shards.tick.failed", replica=self.replica, error=repr(exc))
            except (TimeoutError, OSError) as exc:
                log.warning("shards.tick.failed", replica=self.replica, error=repr(exc))
                await self._drop_all()

    async def tick(self) -> None:
        """One round: renew what we hold, then rebalance towards our fair share."""
        payload = self.replica.encode()
        self._presence_revision = await self._put(
            replica_key(self.replica), payload, self._presence_revision
        )
        for shard, revision in sorted(self.owned.items()):
            renewed = await self._renew(shard_key(shard), payload, revision)
            if renewed is None:
                await self._lose(shard)
            else:
                self.owned[shard] = renewed
        was_leader = self.is_leader
        self.leader_revision = await self._put(LEADER_KEY, payload, self.leader_revision)
        if self.is_leader != was_leader:
            await self._on_leadership(self.is_leader)

        fair = math.ceil(self._shards / await self._live_replicas())
        for shard in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - fair)]:
            await self._release(shard)
        for shard in range(self._shards):
            if len(self.owned) >= fair:
                break
            if shard in self.owned:
                continue
            try:
                revision = await self._kv.create(shard_key(shard), payload)
            except KeyValueError:
                continue  # another replica holds it
            self.owned[shard] = revision
            log.info("shards.acquired", replica=self.replica, shard=shard)
            await self._on_acquire(shard)

    async def _put(self, key: str, payload: bytes, revision: int | None) -> int | None:
        """Renew ``key`` if we hold it, else try to take it; ``None`` if someone else has it."""
        if revision is not None:
            renewed = await self._renew(key, payload, revision)
            if renewed is not None:
                return renewed
        try:
            return await self._kv.create(key, payload)
        except KeyValueError:
            return None

    async def _renew(self, key: str, payload: bytes, revision: int) -> int | None:
        try:
            return await self._kv.update(key, payload, last=revision)
        except KeyValueError:
            return None

    async def _live_replicas(self) -> int:
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return 1
        return max(1, sum(1 for k in keys if k.startswith("replica-")))

    async def _lose(self, shard: int) -> None:
        self.owned.pop(shard, None)
        log.warning("shards.lost", replica=self.replica, shard=shard)
        await self._on_release(shard)

    async def _release(self, shard: int) -> None:
        revision = self.owned.pop(shard)
        await self._on_release(shard)
        # Already gone or taken over: either way it is not ours any more.
        with contextlib.suppress(KeyValueError):
            await self._kv.delete(shard_key(shard), last=revision)
        log.info("shards.released", replica=self.replica, shard=shard)

    async def _drop_all(self) -> None:
        """The bus is unreachable: we cannot prove our leases, so we hold none."""
        for shard in list(self.owned):
            await self._lose(shard)
        if self.is_leader:
            self.leader_revision = None
            await self._on_leadership(False)
        self._presence_revision = None

    async def release_all(self) -> None:
        """Orderly shutdown: hand everything back at once instead of waiting for the TTL."""
        for shard in list(self.owned):
            await self._release(shard)
        for key, revision in (
            (LEADER_KEY, self.leader_revision),
            (replica_key(self.replica), self._presence_revision),
        ):
            if revision is not None:
                with contextlib.suppress(KeyValueError):
                    await self._kv.delete(key, last=revision)
        if self.is_leader:
            self.leader_revision = None
            await self._on_leadership(False)
        self._presence_revision = None
