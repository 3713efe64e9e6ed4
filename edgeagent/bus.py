"""The agent's bus: what it needs from NATS, as a Protocol, and the NATS implementation.

The reconciler and the agent speak to :class:`AgentBus` only, so unit tests
run them on :class:`edgeagent.membus.MemoryBus` without sockets. :class:`NatsBus`
either owns a connection (from a URL; reconnects forever, invariant 6) or
borrows one that many simulated agents share; a borrowed connection is never
closed or drained by the agent, only the agent's own subscriptions are.

Full desired state is read without consumers (invariant 2): a batch direct
get of the last message per subject. ``multi_last`` answers at most 1024
subjects (more is status 413), so a larger scope is paged through with
``next_by_subj`` by sequence, which the stream's one-message-per-subject limit
makes equivalent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Protocol

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from edgeagent.acks import Acks
from edgeagent.errors import BlobError, BusError, BusRejected, BusUnavailable
from edgeagent.fanout import NATS_ERRORS as _NATS_ERRORS
from edgeagent.fanout import Fanout, FanoutSubscription, Handler
from edgeagent.settings import AgentSettings
from edgeagent.tasks import TaskSet, wait_event
from protocol import subjects

log = structlog.get_logger(__name__)

DIRECT_GET = "$JS.API.DIRECT.GET"
_STATUS = "Status"
_CONNECT_POLL = 0.05

_DRAIN_ERRORS: tuple[type[BaseException], ...] = _NATS_ERRORS


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class AgentBus(Protocol):
    """Everything the agent does on the bus."""

    @property
    def connected(self) -> bool: ...

    def reconnects(self) -> int:
        """How many times the connection came back; a change means "re-read everything"."""
        ...

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def wait_connected(self, timeout: float | None = None) -> bool: ...
    async def wait_reconnect(self, seen: int, timeout: float) -> int: ...
    async def request(self, subject: str, payload: bytes, *, timeout: float) -> bytes: ...
    async def subscribe(self, subject: str, handler: Handler) -> Subscription: ...
    async def last_message(self, subject: str) -> bytes | None: ...
    async def last_messages(self, subject_filter: str) -> list[tuple[str, bytes]]: ...
    async def fetch_blob(self, manifest_id: str) -> bytes: ...
    async def publish(self, subject: str, payload: bytes) -> None: ...
    async def publish_durable(self, subject: str, payload: bytes) -> None: ...


class _NatsSub:
    def __init__(self, bus: NatsBus, sub: FanoutSubscription) -> None:
        self._bus = bus
        self._sub = sub

    async def unsubscribe(self) -> None:
        self._bus._subs.discard(self)
        with contextlib.suppress(*_NATS_ERRORS):
            await self._sub.unsubscribe()


class NatsBus:
    """:class:`AgentBus` on nats-py; give either ``client`` (shared) or ``url`` (owned)."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        client: Client | None = None,
        url: str | None = None,
        name: str = "shoal-agent",
        fanout: Fanout | None = None,
    ) -> None:
        if (client is None) == (url is None):
            raise ValueError("give exactly one of client= or url=")
        self._settings = settings
        self._url = url
        self._name = name
        self._nc: Client | None = client
        self._js: JetStreamContext | None = client.jetstream() if client else None
        self._objects: ObjectStore | None = None
        self._subs: set[_NatsSub] = set()
        # Given when the connection is shared with other buses; else made at first use.
        self._fanout = fanout
        self._wake = asyncio.Event()
        self._tasks = TaskSet("bus")
        # An owned connection signals reconnects itself; for a shared one the owner
        # may promise to call notify_reconnected(), which spares the polling.
        self._notified = url is not None

    def notify_reconnected(self) -> None:
        """Called by the owner of a shared connection when it has reconnected."""
        self._notified = True
        self._wake.set()

    @property
    def owns_connection(self) -> bool:
        return self._url is not None

    @property
    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    def reconnects(self) -> int:
        return int(self._nc.stats["reconnects"]) if self._nc is not None else 0

    async def start(self) -> None:
        if self._url is not None and self._nc is None:
            self._tasks.spawn("connect", self._connect(self._url))

    async def _connect(self, url: str) -> None:
        async def on_error(exc: Exception) -> None:
            log.debug("bus.error", url=url, error=str(exc) or type(exc).__name__)

        async def on_disconnected() -> None:
            log.warning("bus.disconnected", url=url)

        async def on_reconnected() -> None:
            log.info("bus.reconnected", url=url)
            self._wake.set()
            # Publishes sent before may be lost: stop waiting for their acks.
            Acks.of(nc).abandon("the connection was re-established")

        nc = await nats.connect(
            servers=url.split(","),
            name=self._name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self._settings.reconnect_wait,
            connect_timeout=max(1, int(self._settings.request_timeout)),
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        self._nc = nc
        self._js = nc.jetstream()
        log.info("bus.connected", url=url)
        self._wake.set()

    async def close(self) -> None:
        """Unsubscribe; drain and close the connection if this bus owns it."""
        await self._tasks.cancel_all()
        for sub in list(self._subs):
            await sub.unsubscribe()
        nc = self._nc
        if self._url is not None and nc is not None:
            self._nc = None
            try:
                async with asyncio.timeout(self._settings.drain_timeout):
                    await nc.drain()
            except _DRAIN_ERRORS:
                log.warning("bus.drain_failed")
            with contextlib.suppress(*_NATS_ERRORS):
                await nc.close()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.connected:
            if deadline is not None and loop.time() >= deadline:
                return False
            self._wake.clear()
            await wait_event(self._wake, _CONNECT_POLL * 2)
        return True

    async def wait_reconnect(self, seen: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.reconnects() == seen:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()
            poll = remaining if self._notified else self._settings.reconnect_check_interval
            await wait_event(self._wake, min(remaining, poll))
        return self.reconnects()

    def _client(self) -> Client:
        if self._nc is None or not self._nc.is_connected:
            raise BusUnavailable("not connected to NATS")
        return self._nc

    def _jetstream(self) -> JetStreamContext:
        self._client()
        assert self._js is not None
        return self._js

    async def request(self, subject: str, payload: bytes, *, timeout: float) -> bytes:
        nc = self._client()
        try:
            msg = await nc.request(subject, payload, timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise BusUnavailable(f"nobody answers on {subject}: is the control plane up?") from exc
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"request on {subject} failed: {exc!r}") from exc
        return bytes(msg.data)

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        nc = self._client()
        if self._fanout is None:  # a bus of its own: a fan-out with one handler per subject
            self._fanout = Fanout(nc)
        handle = _NatsSub(self, await self._fanout.subscribe(subject, handler))
        self._subs.add(handle)
        return handle

    async def last_message(self, subject: str) -> bytes | None:
        js = self._jetstream()
        try:
            raw = await js.get_last_msg(subjects.DESIRED_STREAM, subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"cannot read the last message on {subject}: {exc!r}") from exc
        return bytes(raw.data or b"")

    async def last_messages(self, subject_filter: str) -> list[tuple[str, bytes]]:
        """(subject, data) of the last message of every subject matching the filter."""
        try:
            return await self._batch_get({"multi_last": [subject_filter]}, paged=False)
        except BusRejected as exc:
            if exc.code != "413":
                raise
        return await self._batch_get({"next_by_subj": subject_filter}, paged=True)

    async def _batch_get(self, base: dict[str, Any], *, paged: bool) -> list[tuple[str, bytes]]:
        nc = self._client()
        found: dict[str, tuple[int, bytes]] = {}
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def collect(msg: Msg) -> None:
            queue.put_nowait(msg)

        inbox = nc.new_inbox()
        try:
            sub = await nc.subscribe(inbox, cb=collect)
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"cannot subscribe for a direct get: {exc!r}") from exc
        api = f"{DIRECT_GET}.{subjects.DESIRED_STREAM}"
        next_seq = 1
        try:
            while True:
                request = {**base, "batch": self._settings.snapshot_batch}
                if paged:
                    request["seq"] = next_seq
                await nc.publish(api, json.dumps(request).encode(), reply=inbox)
                pending, last_seq = await self._read_batch(queue, found)
                if pending is None or pending == 0:
                    break
                if not paged:
                    raise BusRejected("multi-last direct get left results pending", code="413")
                next_seq = last_seq + 1
        except BusError:
            raise
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"direct get on {api} failed: {exc!r}") from exc
        finally:
            with contextlib.suppress(*_NATS_ERRORS):
                await sub.unsubscribe()
        return [(subject, data) for subject, (_, data) in sorted(found.items())]

    async def _read_batch(
        self, queue: asyncio.Queue[Msg], found: dict[str, tuple[int, bytes]]
    ) -> tuple[int | None, int]:
        """Read one batch into ``found``: (pending after it, or None if no match; last seq)."""
        last_seq = 0
        while True:
            try:
                async with asyncio.timeout(self._settings.request_timeout):
                    msg = await queue.get()
            except TimeoutError as exc:
                raise BusUnavailable("direct get timed out") from exc
            headers = msg.headers or {}
            status = headers.get(_STATUS)
            if status == "404":
                return None, last_seq
            if status == "204":
                return int(headers.get("Nats-Num-Pending", "0") or 0), last_seq
            if status:
                description = headers.get("Description", "")
                raise BusRejected(f"direct get refused: {status} {description}", code=status)
            subject = headers.get("Nats-Subject", "")
            seq = int(headers.get("Nats-Sequence", "0") or 0)
            last_seq = max(last_seq, seq)
            if subject and seq >= found.get(subject, (0, b""))[0]:
                found[subject] = (seq, bytes(msg.data))

    async def fetch_blob(self, manifest_id: str) -> bytes:
        try:
            if self._objects is None:
                # Its API calls get the whole download's budget, not nats-py's 5 s
                # default: on a busy link or loop that default failed downloads the
                # caller was still willing to wait for.
                js = self._client().jetstream(timeout=self._settings.blob_timeout)
                self._objects = await js.object_store(subjects.BLOB_BUCKET)
            result = await self._objects.get(manifest_id)
        except nats.js.errors.NotFoundError as exc:
            raise BlobError(
                f"resources {manifest_id} are not in the blob store", manifest_id=manifest_id
            ) from exc
        except BusUnavailable as exc:
            raise BlobError(
                f"cannot download resources {manifest_id}: {exc}", manifest_id=manifest_id
            ) from exc
        except _NATS_ERRORS as exc:
            raise BlobError(
                f"cannot download resources {manifest_id}: {exc!r}", manifest_id=manifest_id
            ) from exc
        return bytes(result.data or b"")

    async def publish(self, subject: str, payload: bytes) -> None:
        nc = self._client()
        try:
            await nc.publish(subject, payload)
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"publish on {subject} failed: {exc!r}") from exc

    async def publish_durable(self, subject: str, payload: bytes) -> None:
        nc = self._client()
        try:
            await Acks.of(nc).publish(subject, payload, timeout=self._settings.status_ack_timeout)
        except _NATS_ERRORS as exc:
            raise BusUnavailable(f"publish on {subject} failed: {exc!r}") from exc
