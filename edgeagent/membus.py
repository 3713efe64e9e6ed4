"""An in-memory :class:`AgentBus` for unit tests and single-process experiments.

It models just enough of NATS and JetStream for the agent: subject wildcards
(``*`` and ``>``), a last-message-per-subject store standing in for the
desired-state stream, request handlers standing in for the control plane, an
object store, and a switch that takes the "connection" down and up again
(counting reconnects as nats-py does). Nothing here touches a socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from edgeagent.errors import BlobError, BusUnavailable
from edgeagent.fanout import Handler
from edgeagent.tasks import wait_event

Responder = Callable[[str, bytes], Awaitable[bytes]]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a final ``>`` is one or more."""
    want = pattern.split(".")
    have = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


@dataclass
class _MemSub:
    bus: MemoryBus
    pattern: str
    handler: Handler

    async def unsubscribe(self) -> None:
        self.bus._subs.discard(self)

    def __hash__(self) -> int:
        return id(self)


@dataclass
class MemoryBus:
    """A fake bus; ``retained`` maps subject -> last payload (the desired stream)."""

    retained: dict[str, bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    responders: dict[str, Responder] = field(default_factory=dict)
    published: list[tuple[str, bytes]] = field(default_factory=list)
    durable: list[tuple[str, bytes]] = field(default_factory=list)
    up: bool = True
    _reconnects: int = 0
    _subs: set[_MemSub] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    # --- test controls ----------------------------------------------------------

    async def put(self, subject: str, payload: bytes) -> None:
        """Retain ``payload`` on ``subject`` (as a JetStream publish) and deliver it live."""
        self.retained[subject] = payload
        await self.deliver(subject, payload)

    async def deliver(self, subject: str, payload: bytes) -> None:
        """Deliver to live subscribers only (a core NATS publish)."""
        if not self.up:
            return
        for sub in list(self._subs):
            if subject_matches(sub.pattern, subject):
                await sub.handler(subject, payload)

    def go_down(self) -> None:
        self.up = False

    def come_back(self) -> None:
        self.up = True
        self._reconnects += 1
        self._changed.set()

    # --- AgentBus -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.up

    def reconnects(self) -> int:
        return self._reconnects

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._subs.clear()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.up:
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def wait_reconnect(self, seen: int, timeout: float) -> int:
        if self._reconnects == seen:
            self._changed.clear()
            await wait_event(self._changed, timeout)
        return self._reconnects

    def _check(self) -> None:
        if not self.up:
            raise BusUnavailable("memory bus is down")

    async def request(self, subject: str, payload: bytes, *, timeout: float) -> bytes:
        self._check()
        for pattern, responder in self.responders.items():
            if subject_matches(pattern, subject):
                async with asyncio.timeout(timeout):
                    return await responder(subject, payload)
        raise BusUnavailable(f"nobody answers on {subject}")

    async def subscribe(self, subject: str, handler: Handler) -> _MemSub:
        self._check()
        sub = _MemSub(self, subject, handler)
        self._subs.add(sub)
        return sub

    async def last_message(self, subject: str) -> bytes | None:
        self._check()
        return self.retained.get(subject)

    async def last_messages(self, subject_filter: str) -> list[tuple[str, bytes]]:
        self._check()
        return sorted(
            (s, d) for s, d in self.retained.items() if subject_matches(subject_filter, s)
        )

    async def fetch_blob(self, manifest_id: str) -> bytes:
        if not self.up:
            raise BlobError("memory bus is down", manifest_id=manifest_id)
        try:
            return self.blobs[manifest_id]
        except KeyError:
            raise BlobError(f"no blob {manifest_id}", manifest_id=manifest_id) from None

    async def publish(self, subject: str, payload: bytes) -> None:
        self._check()
        self.published.append((subject, payload))

    async def publish_durable(self, subject: str, payload: bytes) -> None:
        self._check()
        self.durable.append((subject, payload))
