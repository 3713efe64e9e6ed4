"""JetStream publishes with acknowledgement: one reply subscription per connection.

nats-py's ``JetStreamContext.publish`` is a request: a new inbox token, a
future and a ``wait_for`` timer per message, and the acknowledgement parsed
into a dataclass. That is nothing for one agent sending a report now and then;
a process running thousands of agents on a few shared connections (a
simulated fleet, agents behind one site's uplink) sends thousands at once, and
the per-message timers alone filled its event loop's timer heap.

:class:`Acks` numbers a connection's publishes, takes every acknowledgement on
one wildcard reply subscription, and times publishes out together: while any
is pending, a sweep every ``SWEEP`` seconds fails those past their deadline.
What counts as an acknowledgement is JetStream's: ``{"stream": ..., "seq":
...}`` stored, ``{"error": {...}}`` refused, a 503 status when no stream
takes the subject.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import weakref
from typing import ClassVar

from nats.aio.client import Client
from nats.aio.msg import Msg

from edgeagent.errors import BusRejected, BusUnavailable

SWEEP = 0.25  # seconds between checks for publishes past their deadline
_NO_RESPONDERS = "503"


class Acks:
    """Acknowledged publishes on one nats-py connection; :meth:`of` shares one per connection."""

    _shared: ClassVar[weakref.WeakKeyDictionary[Client, Acks]] = weakref.WeakKeyDictionary()

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._subscribed = False
        self._sequence = 0
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._deadlines: list[tuple[float, str]] = []  # a heap
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, nc: Client) -> Acks:
        acks = cls._shared.get(nc)
        if acks is None:
            acks = cls._shared[nc] = cls(nc)
        return acks

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def publish(self, subject: str, payload: bytes, *, timeout: float) -> None:
        """Publish and wait until the stream stored it.

        :class:`BusRejected` if JetStream refused it, :class:`BusUnavailable` if no
        stream takes ``subject`` or no acknowledgement came within ``timeout`` s.
        """
        if not self._subscribed:
            await self._subscribe()
        loop = asyncio.get_running_loop()
        self._sequence += 1
        token = str(self._sequence)
        future: asyncio.Future[None] = loop.create_future()
        self._pending[token] = future  # before publishing: the ack may come during it
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token)
            # The clock starts once the client took the message, as for a request:
            # waiting for room in a full outgoing buffer is not the server's delay.
            heapq.heappush(self._deadlines, (loop.time() + timeout, token))
            if self._sweeper is None:
                self._sweeper = loop.create_task(self._sweep(), name="acks:sweep")
            try:
                await future
            except TimeoutError:
                raise BusUnavailable(
                    f"publish on {subject}: no acknowledgement within {timeout:g} s"
                ) from None
            except BusRejected as exc:
                raise BusRejected(
                    f"JetStream refused a publish on {subject}: {exc}", code=exc.code
                ) from None
            except BusUnavailable as exc:
                raise BusUnavailable(f"publish on {subject}: {exc}") from None
        finally:
            self._pending.pop(token, None)

    def abandon(self, reason: str) -> None:
        """Fail every publish still waiting (a reconnect: its ack may never come)."""
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(BusUnavailable(f"{reason}; the publish may be lost"))

    async def _subscribe(self) -> None:
        prefix = f"{self._nc.new_inbox()}."
        sub = await self._nc.subscribe(prefix + "*", cb=self._on_ack)
        if self._subscribed:  # another publish subscribed meanwhile
            await sub.unsubscribe()
            return
        self._prefix, self._subscribed = prefix, True

    async def _on_ack(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if future is None or future.done():
            return  # timed out already, or its publisher was cancelled
        if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            future.set_exception(BusUnavailable("no stream takes this subject"))
            return
        data = msg.data
        if data[:1] == b"{" and b'"seq":' in data and b'"error"' not in data:
            future.set_result(None)  # {"stream": ..., "seq": ...}: no need to parse it
            return
        try:
            ack = json.loads(data)
        except ValueError:
            ack = None
        if isinstance(ack, dict) and "seq" in ack and "error" not in ack:
            future.set_result(None)
            return
        error = ack.get("error") if isinstance(ack, dict) else None
        if isinstance(error, dict):
            future.set_exception(
                BusRejected(
                    str(error.get("description", error)),
                    code=str(error.get("err_code", error.get("code", ""))),
                )
            )
        else:
            future.set_exception(BusRejected(f"unexpected JetStream reply {msg.data[:200]!r}"))

    async def _sweep(self) -> None:
        """Fail publishes past their deadline; ends when none is pending."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                await asyncio.sleep(SWEEP)
                now = loop.time()
                deadlines = self._deadlines
                while deadlines and deadlines[0][0] <= now:
                    future = self._pending.pop(heapq.heappop(deadlines)[1], None)
                    if future is not None and not future.done():
                        future.set_exception(TimeoutError())
        finally:
            self._sweeper = None
