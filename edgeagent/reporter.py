"""Status reports and heartbeats: what the control plane learns of this cluster.

A :class:`StatusReport` carries every desired bundle's status and is sent when
any of them changed, a moment (``status_settle``) after the first change so
that a burst of changes is one report, and at most once per
``status_interval`` (changes in between are batched), with JetStream
acknowledgement so the status stream holds the cluster's latest report. The
reporter sleeps until the reconciler tells it of a change, so a thousand idle
agents in one process cost no wake-ups. A report that could not be sent stays
due and is retried with exponential backoff and jitter (a late JetStream ack
is a failure too): when a whole site's agents fail at once, e.g. because the
bus is overloaded, retrying them all on the next interval would repeat the
overload, so each agent waits longer after each failure, at a random point of
its window. The first failure of a streak is logged as a warning, later ones
at debug level, and the recovery once. After a reconnect a full report is sent
even if nothing changed. Heartbeats are core NATS and skipped when a report
went out within the heartbeat interval, since the report proves liveness as
well.

Sequence numbers start from the wall clock in milliseconds, so they keep
increasing across agent restarts without any saved counter.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from edgeagent.bus import AgentBus
from edgeagent.errors import BusError
from edgeagent.settings import AgentSettings
from edgeagent.store import Identity
from edgeagent.tasks import Alarm, AlarmClock, Wakeup
from protocol import subjects
from protocol.codec import encode_heartbeat, encode_status
from protocol.messages import BundleStatus

log = structlog.get_logger(__name__)


class StatusSource(Protocol):
    version: int

    def statuses(self) -> tuple[BundleStatus, ...]: ...


class Reporter:
    """Publishes one cluster's status reports and heartbeats."""

    def __init__(
        self,
        bus: AgentBus,
        source: StatusSource,
        settings: AgentSettings,
        *,
        identity: Identity | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._source = source
        self._settings = settings
        self._clock = clock
        self.identity = identity
        base = int(clock() * 1000)
        self.status_seq = base
        self.heartbeat_seq = base
        self._sent_version: int | None = None
        self._force = True
        self._last_status_at = -math.inf
        self.reports_sent = 0
        self.heartbeats_sent = 0
        self.failures = 0  # consecutive reports the bus did not take
        # run_status sleeps on _due; an alarm set by notify() wakes it when a report
        # may go: a moment after the first change, never sooner than the interval
        # (or backoff) after the attempt before. One wake-up per report.
        self._due = Wakeup()
        self._alarm: Alarm | None = None
        self._reporting = False  # between the alarm and the end of that attempt
        self._not_before = -math.inf
        self._timers: AlarmClock | None = None
        self._subjects_of: Identity | None = None
        self._subject_pair = ("", "")

    def notify(self) -> None:
        """Something in the status changed: report it (within the status interval)."""
        self._arm()

    def force_full(self) -> None:
        """Send a full report at the next interval even if nothing changed (reconnects)."""
        self._force = True
        self._arm()

    def _arm(self) -> None:
        if self._alarm is not None or self._reporting or self._timers is None:
            return  # a report is coming, or run_status will arm when it starts
        settle = min(self._settings.status_settle, self._settings.status_interval)
        now = self._timers.time()
        self._alarm = self._timers.at(max(now + settle, self._not_before), self._ring)

    def _ring(self) -> None:
        self._alarm = None
        self._reporting = True
        self._due.set()

    def _subjects(self, identity: Identity) -> tuple[str, str]:
        """(status, heartbeat) subjects of ``identity``, built once per identity."""
        if self._subjects_of is not identity:
            self._subject_pair = (
                subjects.status(identity.shard, identity.cluster_id),
                subjects.heartbeat(identity.shard, identity.cluster_id),
            )
            self._subjects_of = identity
        return self._subject_pair

    @property
    def dirty(self) -> bool:
        return self._force or self._sent_version != self._source.version

    async def flush(self) -> bool:
        """Send a report now if one is due; True if the bus took it."""
        if not self.dirty or self.identity is None or not self._bus.connected:
            return False
        version = self._source.version
        seq = self.status_seq + 1
        report = encode_status(seq, self._clock(), self._source.statuses())
        subject = self._subjects(self.identity)[0]
        try:
            await self._bus.publish_durable(subject, report)
        except BusError as exc:
            self.failures += 1
            emit = log.warning if self.failures == 1 else log.debug
            emit(
                "status.publish_failed",
                cluster=self.identity.cluster_id,
                error=str(exc),
                failures=self.failures,
            )
            return False
        if self.failures:
            log.info(
                "status.publish_recovered", cluster=self.identity.cluster_id, after=self.failures
            )
            self.failures = 0
        self.status_seq = seq
        self._sent_version = version
        self._force = False
        self._last_status_at = asyncio.get_running_loop().time()
        self.reports_sent += 1
        return True

    async def beat(self) -> bool:
        """Send a heartbeat unless a report went out within the heartbeat interval."""
        if self.identity is None or not self._bus.connected:
            return False
        since = asyncio.get_running_loop().time() - self._last_status_at
        if since < self._settings.heartbeat_interval:
            return False
        seq = self.heartbeat_seq + 1
        subject = self._subjects(self.identity)[1]
        try:
            await self._bus.publish(subject, encode_heartbeat(seq, self.status_seq))
        except BusError as exc:
            log.debug("heartbeat.failed", cluster=self.identity.cluster_id, error=str(exc))
            return False
        self.heartbeat_seq = seq
        self.heartbeats_sent += 1
        return True

    def retry_delay(self) -> float:
        """Pause before the next report: the interval, or a jittered backoff after failures."""
        interval = self._settings.status_interval
        if not self.failures:
            return interval
        ceiling = max(interval, min(self._settings.retry_max, interval * 2.0**self.failures))
        return ceiling * (0.5 + 0.5 * random.random())

    async def run_status(self) -> None:
        loop = asyncio.get_running_loop()
        self._timers = AlarmClock.of(loop)
        self._arm()  # the first report goes out as soon as there is an identity
        try:
            while True:
                await self._due.wait()
                self._due.clear()
                await self.flush()
                self._not_before = loop.time() + self.retry_delay()
                self._reporting = False
                if self.dirty:  # changed meanwhile, or the bus refused: go again
                    self._arm()
        finally:
            if self._alarm is not None:
                self._alarm.cancel()
            self._alarm, self._reporting, self._timers = None, False, None

    async def run_heartbeats(self) -> None:
        clock = AlarmClock.of(asyncio.get_running_loop())
        while True:
            await clock.sleep(self._settings.heartbeat_interval)
            await self.beat()
