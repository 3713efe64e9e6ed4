"""One NATS subscription per subject for the many agents sharing a connection.

Agents behind a site's leaf node each subscribe at the leaf node; the hub sends
the leaf node one copy of a class's message and the leaf node hands it to each
subscriber. A simulated fleet's agents share a few connections the same way,
and :class:`Fanout` plays the leaf node's part: the first agent subscribing to
a subject on the connection makes the NATS subscription, later ones join it,
and a message is decoded by nats-py once and handed to every agent's handler
in turn (each agent still decodes and acts on it itself). Without it, a class
of 5,000 agents on one connection is 5,000 subscriptions, 5,000 copies on the
wire and 5,000 nats-py delivery tasks for every class message.

Only the incoming direction is shared: what an agent publishes (status,
heartbeats) stays its own message on its own subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from edgeagent.errors import BusUnavailable

log = structlog.get_logger(__name__)

Handler = Callable[[str, bytes], Awaitable[None]]
NATS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, TimeoutError, OSError)


class _Subject:
    """The shared subscription to one subject and the handlers it feeds."""

    def __init__(self) -> None:
        self.handlers: dict[int, Handler] = {}
        self.ready: asyncio.Future[NatsSubscription] = asyncio.get_running_loop().create_future()

    async def deliver(self, msg: Msg) -> None:
        data = bytes(msg.data)
        for handler in list(self.handlers.values()):
            try:
                await handler(msg.subject, data)
            except Exception:
                log.exception("bus.handler_failed", subject=msg.subject)


class FanoutSubscription:
    """One handler's place in a shared subscription; :meth:`unsubscribe` leaves it."""

    def __init__(self, fanout: Fanout, subject: str, key: int) -> None:
        self._fanout = fanout
        self._subject = subject
        self._key = key

    async def unsubscribe(self) -> None:
        await self._fanout._leave(self._subject, self._key)


class Fanout:
    """Shared subscriptions on one connection (see the module docstring)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._subjects: dict[str, _Subject] = {}
        self._keys = itertools.count()

    def subscribers(self, subject: str) -> int:
        """How many handlers the subscription to ``subject`` feeds."""
        shared = self._subjects.get(subject)
        return len(shared.handlers) if shared is not None else 0

    @property
    def subscriptions(self) -> int:
        """NATS subscriptions held (one per subject with handlers)."""
        return len(self._subjects)

    async def subscribe(self, subject: str, handler: Handler) -> FanoutSubscription:
        """Join (or make) the subscription to ``subject``; returns once it is in place.

        In place means the server has it before anything this connection sends
        next, as for a subscription of one's own: a snapshot read afterwards
        cannot miss a message that the subscription does not deliver.
        """
        shared = self._subjects.get(subject)
        key = next(self._keys)
        if shared is None:
            shared = self._subjects[subject] = _Subject()
            shared.handlers[key] = handler
            try:
                sub = await self._nc.subscribe(subject, cb=shared.deliver)
            except NATS_ERRORS as exc:
                error = BusUnavailable(f"cannot subscribe to {subject}: {exc!r}")
                if self._subjects.get(subject) is shared:
                    del self._subjects[subject]
                shared.ready.set_exception(error)
                shared.ready.exception()  # marked retrieved: joiners re-raise it
                raise error from exc
            shared.ready.set_result(sub)
            if self._subjects.get(subject) is not shared:  # all left while it was made
                with contextlib.suppress(*NATS_ERRORS):
                    await sub.unsubscribe()
        else:
            shared.handlers[key] = handler
            try:
                await asyncio.shield(shared.ready)
            except BusUnavailable:
                shared.handlers.pop(key, None)
                raise
        return FanoutSubscription(self, subject, key)

    async def _leave(self, subject: str, key: int) -> None:
        shared = self._subjects.get(subject)
        if shared is None or shared.handlers.pop(key, None) is None or shared.handlers:
            return
        del self._subjects[subject]  # the last one out: later joiners subscribe anew
        if shared.ready.done() and not shared.ready.exception():
            with contextlib.suppress(*NATS_ERRORS):
                await shared.ready.result().unsubscribe()
