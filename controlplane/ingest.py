"""Status and heartbeat ingest, per shard.

Status reports are read from the SHOAL_STATUS stream in batches through one
ephemeral pull consumer per owned shard, starting with the last report of
every cluster (``deliver_policy=last_per_subject``): that is how a restarted
control plane recovers every cluster's state without asking agents for it.
Heartbeats are core NATS messages; losing one is harmless. A malformed message
is counted, logged with its subject, and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from controlplane.fleet import Fleet
from controlplane.settings import ServerSettings
from controlplane.tasks import TaskSet
from protocol import codec, subjects
from protocol.errors import DecodeError
from protocol.messages import StatusReport

log = structlog.get_logger(__name__)

FETCH_WAIT = 1.0
RESTART_BACKOFF = 1.0
MAX_RESTART_BACKOFF = 15.0
# A report can reach a shard's owner before the owner's watch of the cluster
# bucket shows the registration (another replica took it). Such a report is
# kept, latest per cluster, and ingested once the cluster is known.
PARKED_RETRY = 0.5  # seconds between looks at parked reports
PARKED_MAX_AGE = 60.0  # seconds a report may wait for its cluster before it is dropped
PARKED_MAX = 100_000  # reports parked at most (oldest dropped first)
# A heartbeat announcing a report this replica has not taken: after this many
# seconds (the report may still be on its way through the stream) the report
# is read from the stream, where the last one per cluster is kept.
UNREPORTED_GRACE = 10.0
UNREPORTED_CHECK = 2.0  # seconds between looks for such clusters
UNREPORTED_BATCH = 500  # reports read per look at most


PULL_GRACE = 1.0  # seconds past a pull request's expiry before it counts as lost
_STATUS = "Status"
_DESCRIPTION = "Description"
_IDLE_HEARTBEAT = "100"
_REQUEST_OVER = frozenset({"404", "408"})


class _Batch:
    """Where one pull request stands: over when full, ended by the server, or failed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.received = 0
        self.error = ""
        self.over = asyncio.Event()

    def start(self) -> None:
        self.received = 0
        self.over.clear()

    def took(self) -> None:
        self.received += 1
        if self.received >= self.size:
            self.over.set()

    def end(self) -> None:
        self.over.set()

    def fail(self, error: str) -> None:
        self.error = error
        self.over.set()


def _stream_position(reply: str | None) -> tuple[int, float | None]:
    """(stream sequence, time stored) from a JetStream message's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>``,
    or with ``<domain>.<account hash>`` after ``ACK`` (and a token at the end).
    """
    tokens = (reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[7]) / 1e9
    if len(tokens) >= 11:
        return int(tokens[7]), int(tokens[9]) / 1e9
    return 0, None


class Ingest:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        fleet: Fleet,
        settings: ServerSettings,
        counters: Counter[str],
        *,
        tasks: TaskSet,
    ) -> None:
        self._nc = nc
        self._js = js
        self._fleet = fleet
        self._settings = settings
        self.counters = counters
        self._tasks = tasks
        self._heartbeat_subs: dict[int, Subscription] = {}
        self._consumers: dict[int, asyncio.Task[None]] = {}
        # cluster ID -> (since, subject, data, stream seq, stored at) of its latest report
        self._parked: dict[str, tuple[float, str, bytes, int, float | None]] = {}

    def handle(
        self,
        subject: str,
        data: bytes,
        *,
        kind: str,
        stream_seq: int = 0,
        stored_at: float | None = None,
    ) -> None:
        try:
            # The subscriptions' filters fix all but the last of five tokens, and a
            # registered cluster's ID is a valid one: anything else is checked whole.
            cluster_id = subject.rpartition(".")[2]
            if subject.count(".") != 4 or cluster_id not in self._fleet.registry.clusters:
                _, cluster_id = subjects.parse_cluster_subject(subject)
            if kind == "status" and cluster_id not in self._fleet.registry.clusters:
                codec.decode(data, StatusReport)  # garbage is dropped now, not parked
                self._park(cluster_id, subject, data, stream_seq, stored_at)
                return
            self._fleet.ingest(
                cluster_id, data, now=time.time(), stream_seq=stream_seq, stored_at=stored_at
            )
        except DecodeError as exc:
            self.counters[f"{kind}_dropped"] += 1
            log.warning("bus.message.dropped", kind=kind, subject=subject, error=str(exc))
        else:
            self.counters[f"{kind}_ingested"] += 1

    def _park(
        self, cluster_id: str, subject: str, data: bytes, seq: int, stored_at: float | None
    ) -> None:
        earlier = self._parked.pop(cluster_id, None)
        since = earlier[0] if earlier else time.monotonic()
        if len(self._parked) >= PARKED_MAX:
            oldest = next(iter(self._parked))
            del self._parked[oldest]
            self.counters["status_dropped"] += 1
        self._parked[cluster_id] = (since, subject, data, seq, stored_at)
        self.counters["status_parked"] += 1

    def retry_parked(self, now: float) -> None:
        """Ingest parked reports whose cluster is known now; drop those that waited too long."""
        for cluster_id, (since, subject, data, seq, stored_at) in list(self._parked.items()):
            if cluster_id in self._fleet.registry.clusters:
                del self._parked[cluster_id]
                self.handle(subject, data, kind="status", stream_seq=seq, stored_at=stored_at)
            elif now - since > PARKED_MAX_AGE:
                del self._parked[cluster_id]
                self.counters["status_dropped"] += 1
                log.warning(
                    "bus.message.dropped",
                    kind="status",
                    subject=subject,
                    error=f"status for unknown cluster {cluster_id!r}",
                )

    async def retry_parked_forever(self) -> None:
        while True:
            await asyncio.sleep(PARKED_RETRY)
            if self._parked:
                self.retry_parked(time.monotonic())

    async def recover_unreported_forever(self) -> None:
        while True:
            await asyncio.sleep(UNREPORTED_CHECK)
            await self.recover_unreported(time.time())

    async def recover_unreported(self, now: float, *, grace: float = UNREPORTED_GRACE) -> int:
        """Read from the stream the reports heartbeats announced and ingest missed; how many.

        A report can miss this replica (a pull that timed out under load with the
        batch already on its way, a race with a replica handing over a shard); an
        agent sends no report while nothing changes, so without this a cluster
        could stay counted as WaitApplied though it is Ready.
        """
        recovered = 0
        for record in self._fleet.overdue_reports(now, grace=grace, limit=UNREPORTED_BATCH):
            subject = subjects.status(record.shard, record.id)
            try:
                msg = await self._js.get_last_msg(subjects.STATUS_STREAM, subject)
            except NotFoundError:
                continue  # the agent has sent none yet (it announces its starting seq)
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("status.recover_failed", cluster=record.id, error=repr(exc))
                continue
            if msg.data is None or msg.seq is None or msg.seq <= record.status_key:
                continue
            stored_at = msg.time.timestamp() if msg.time else None
            self.handle(subject, msg.data, kind="status", stream_seq=msg.seq, stored_at=stored_at)
            self.counters["status_recovered"] += 1
            recovered += 1
        return recovered

    async def _on_heartbeat(self, msg: Msg) -> None:
        self.handle(msg.subject, msg.data, kind="heartbeat")

    async def start_shard(self, shard: int) -> None:
        """Begin ingesting a shard this replica now owns."""
        self._fleet.acquire_shard(shard)
        self._heartbeat_subs[shard] = await self._nc.subscribe(
            subjects.heartbeat_shard(shard), cb=self._on_heartbeat
        )
        self._consumers[shard] = self._tasks.spawn(f"status-{shard}", self.consume_status(shard))

    async def stop_shard(self, shard: int) -> None:
        """Stop ingesting a shard this replica no longer owns, and forget its state."""
        await self.stop_status(shard)
        sub = self._heartbeat_subs.pop(shard, None)
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await sub.unsubscribe()
        self._fleet.release_shard(shard)

    async def stop_status(self, shard: int) -> None:
        """Stop reading the shard's status reports (heartbeats still count)."""
        task = self._consumers.pop(shard, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def consume_status(self, shard: int) -> None:
        """Read the shard's status reports forever, recreating the consumer on failure."""
        backoff = RESTART_BACKOFF
        while True:
            try:
                await self._consume_once(shard)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus went away, the consumer vanished, ...
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc  # nats-py swallowed our cancel
                self.counters["status_consumer_restarts"] += 1
                log.warning("status.consumer.restart", shard=shard, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RESTART_BACKOFF)

    async def _consume_once(self, shard: int) -> None:
        """Pull the shard's reports in batches, ingesting each as it arrives.

        One pull request at a time asks for ``status_batch`` reports, waiting up
        to ``FETCH_WAIT`` for them; the messages land on this replica's own
        inbox and are ingested by its subscription's callback. (nats-py's
        ``fetch`` spends a task and a timer on every message, which at fleet
        scale was a fifth of the control plane's work.)
        """
        config = ConsumerConfig(
            filter_subject=subjects.status_shard(shard),
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        )
        info = await self._js.add_consumer(subjects.STATUS_STREAM, config)
        pull = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.STATUS_STREAM}.{info.name}"
        request = json.dumps(
            {"batch": self._settings.status_batch, "expires": int(FETCH_WAIT * 1e9)}
        ).encode()
        batch = _Batch(self._settings.status_batch)

        async def on_message(msg: Msg) -> None:
            status = msg.headers.get(_STATUS) if msg.headers else None
            if status is None:
                seq, stored_at = _stream_position(msg.reply)
                self.handle(
                    msg.subject, msg.data, kind="status", stream_seq=seq, stored_at=stored_at
                )
                batch.took()
            elif status in _REQUEST_OVER:  # no messages, or the request expired
                batch.end()
            elif status != _IDLE_HEARTBEAT:  # consumer deleted, no responders, ...: anew
                batch.fail(f"{status} {msg.headers.get(_DESCRIPTION, '') if msg.headers else ''}")

        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, cb=on_message)
        try:
            while True:
                batch.start()
                await self._nc.publish(pull, request, reply=inbox)
                # The server ends the request by FETCH_WAIT; waiting a little longer
                # covers a reply lost on the way, after which a new request goes out.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FETCH_WAIT + PULL_GRACE):
                        await batch.over.wait()
                if batch.error:
                    raise RuntimeError(f"status consumer of shard {shard} ended: {batch.error}")
                await asyncio.sleep(0)
        finally:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # best effort on the way out
                log.debug("status.consumer.unsubscribe_failed", error=repr(exc))

    async def sweep_offline(self) -> None:
        while True:
            await asyncio.sleep(self._settings.offline_check_interval)
            marked = self._fleet.sweep_offline(time.time())
            if marked:
                self.counters["clusters_marked_offline"] += marked
