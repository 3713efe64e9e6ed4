"""Listening in on the bus during a rollout: desired-state bytes and status reports.

``bytes_per_cluster`` is what each cluster receives, not what one shared
connection carries. NATS delivers a message once per matching subscription,
and every agent subscribes for itself (whether it shares a connection or not),
so a class message of B bytes reaches each of the class's members once. The
tap therefore subscribes once, on the harness's own connection, to the same
subjects the agents use (``shoal.v1.desired.>``, ``shoal.v1.cluster.*.desired.>``
and the schema) and charges each message to the clusters that subscribe to its
subject: the class's members, the one cluster of a per-cluster subject, or
everyone for the schema. Payload bytes are counted apart from the subject
(what a ``MSG`` line adds besides a few bytes of framing). When the fleet runs
in worker processes, each worker counts its own agents per class
(:func:`class_members`) and the harness charges the sum.

The status tap counts status reports and their bytes during the rollout (the
raw NATS reference sends the same number of that size), and can track which
clusters have reported a given deployment Ready, which is how the per-cluster
ablation is timed (the bus view: the very reports the control plane ingests).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgpack
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from edgeagent.agent import Agent
from protocol import subjects
from protocol.classes import ClassSchema, class_of
from protocol.messages import StatusReport
from protocol.states import State

_CLASS_TOKEN = 3  # shoal.v1.desired.<class>.<bundle>


def class_members(agents: Iterable[Agent]) -> Counter[str]:
    """How many of ``agents`` subscribe to each class's subject, by each one's current schema."""
    return Counter(
        class_of(agent.name, agent.labels, agent.desired.schema or ClassSchema())
        for agent in agents
    )


STUCK_SHOWN = 20  # agents described when a bundle does not converge


def stuck_agents(agents: Iterable[Agent], limit: int = STUCK_SHOWN) -> list[dict[str, object]]:
    """Up to ``limit`` agents not all Ready here, as the agent itself sees it.

    For a rollout that does not converge: whether the agent synced, what it
    was told, what it holds and what it reported tell which side lost what.
    """
    out: list[dict[str, object]] = []
    for agent in agents:
        if agent.reconciler.all_ready():
            continue
        out.append(
            {
                "name": agent.name,
                "cluster": agent.identity.cluster_id if agent.identity else None,
                "syncs": agent.syncs,
                "class": class_of(agent.name, agent.labels, agent.desired.schema or ClassSchema()),
                "desired": sorted(agent.desired.effective()),
                "statuses": {s.bundle: str(s.state) for s in agent.reconciler.statuses()},
                "status_seq": agent.reporter.status_seq,
                "reports_sent": agent.reporter.reports_sent,
                "report_failures": agent.reporter.failures,
                "dirty": agent.reporter.dirty,
            }
        )
        if len(out) >= limit:
            break
    return out


@dataclass
class DesiredTap:
    """Counts desired-state messages and the bytes each cluster receives of them."""

    nc: Client
    messages: list[tuple[str, int]] = field(default_factory=list)
    _subs: list[Subscription] = field(default_factory=list)

    async def start(self) -> None:
        for subject in (subjects.DESIRED_ALL, subjects.CLUSTER_DESIRED_ALL, subjects.SCHEMA):
            self._subs.append(await self.nc.subscribe(subject, cb=self._on_message))
        await self.nc.flush()

    async def _on_message(self, msg: Msg) -> None:
        self.messages.append((msg.subject, len(msg.data)))

    async def stop(self) -> None:
        await self.nc.flush()
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs = []

    def figures(self, members: Mapping[str, int], *, clusters: int) -> dict[str, int | float]:
        """The rollout's desired-state figures, for a fleet of ``clusters`` given by class."""
        deliveries, payload, subject_bytes = self.delivered_to(members)
        return {
            "desired_messages_published": len(self.messages),
            "desired_deliveries": deliveries,
            "bytes_per_cluster": round(payload / clusters, 1),
            "bytes_per_cluster_with_subjects": round((payload + subject_bytes) / clusters, 1),
            "desired_message_bytes": max((size for _, size in self.messages), default=0),
        }

    def delivered_to(self, members: Mapping[str, int]) -> tuple[int, int, int]:
        """(deliveries, payload bytes, subject bytes) summed over every receiving cluster.

        The fleet is given as its clusters per class (:func:`class_members`, summed
        over the processes the fleet runs in).
        """
        total = sum(members.values())
        deliveries = payload = subject_bytes = 0
        for subject, size in self.messages:
            parts = subject.split(".")
            if subject == subjects.SCHEMA:
                receivers = total
            elif parts[2] == "desired":
                receivers = members.get(parts[_CLASS_TOKEN], 0)
            else:
                receivers = 1
            deliveries += receivers
            payload += receivers * size
            subject_bytes += receivers * len(subject)
        return deliveries, payload, subject_bytes


def _report_bundles(data: bytes) -> list[Any] | None:
    """The bundle statuses of a status report as msgpack decodes them; None if not one.

    The tap shares the machine with what it measures: at 100,000 reports, building
    the models cost it a quarter of a core while the fleet and control plane
    needed every cycle. The wire form is ``[version, kind, {..., "bundles": [...]}]``.
    """
    try:
        obj = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if not (isinstance(obj, list) and len(obj) == 3 and obj[1] == StatusReport.KIND):
        return None
    payload = obj[2]
    bundles = payload.get("bundles", []) if isinstance(payload, dict) else None
    return bundles if isinstance(bundles, list) else None


def _ready_in(bundles: list[Any], bundle: str, deployment: str) -> bool | None:
    """Whether a report's statuses say ``bundle`` is Ready at ``deployment``; None if absent."""
    found: bool | None = None
    for status in bundles:
        if isinstance(status, dict) and status.get("bundle") == bundle:
            found = (
                status.get("deployment_id") == deployment
                and status.get("state") == State.READY.value
            )
    return found


@dataclass
class StatusTap:
    """Counts status reports; optionally tracks clusters reporting a deployment Ready."""

    nc: Client
    count: int = 0
    bytes: int = 0
    watch_bundle: str = ""
    watch_deployment: str = ""
    want: int = 0
    ready: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    done_at: float = 0.0
    _sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(subjects.STATUS_ALL, cb=self._on_message)
        await self.nc.flush()

    def watch(self, bundle: str, deployment: str, want: int) -> None:
        self.watch_bundle, self.watch_deployment, self.want = bundle, deployment, want
        self.ready = set()
        self.done.clear()

    def reset_counts(self) -> None:
        self.count = self.bytes = 0

    async def _on_message(self, msg: Msg) -> None:
        self.count += 1
        self.bytes += len(msg.data)
        if not self.watch_deployment:
            return
        bundles = _report_bundles(msg.data)
        if bundles is None:
            return
        cluster = msg.subject.rsplit(".", 1)[-1]
        ready = _ready_in(bundles, self.watch_bundle, self.watch_deployment)
        if ready:
            self.ready.add(cluster)
        elif ready is not None:
            self.ready.discard(cluster)
        if len(self.ready) >= self.want and not self.done.is_set():
            self.done_at = time.monotonic()
            self.done.set()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    @property
    def mean_size(self) -> int:
        return self.bytes // self.count if self.count else 0

    def figures(self) -> dict[str, int]:
        """The status reports seen: how many, their bytes, their mean size."""
        return {
            "status_messages": self.count,
            "status_bytes": self.bytes,
            "status_message_bytes": self.mean_size,
        }


_DIRECT_GET = "$JS.API.DIRECT.GET"
READ_BACK_BATCH = 1000  # reports per batch direct get when reading the stream back
READ_BACK_TIMEOUT = 10.0  # seconds one batch may take


@dataclass
class StoredReports:
    """The status reports JetStream stored during a rollout, read back afterwards.

    The rollout's "all reported" figures without a live tap: a subscription to
    every status subject has nats-server deliver each report twice and the
    harness read 100,000 of them while the processes being measured need every
    cycle of the two cores. The status stream numbers every report it stores
    (so the sequences between :meth:`mark` and :meth:`figures` count them) and
    keeps each cluster's last one with the time it was stored, which is when
    that cluster's Ready reached the bus.
    """

    nc: Client
    bundle: str
    deployment: str
    want: int
    first_seq: int = 0

    async def _last_seq(self) -> int:
        info = await self.nc.jetstream().stream_info(subjects.STATUS_STREAM)
        return int(info.state.last_seq)

    async def mark(self) -> None:
        """Note where the status stream stands: reports after this one count."""
        self.first_seq = await self._last_seq() + 1

    async def figures(self, started_wall: float) -> dict[str, Any]:
        """``status_messages`` stored since :meth:`mark`, their size, and
        ``seconds_to_all_reported`` (since ``started_wall``, a ``time.time()``) once
        ``want`` clusters' kept reports say the deployment is Ready."""
        count = await self._last_seq() - self.first_seq + 1
        try:
            kept = await self._read_back()
        except TimeoutError:  # the run's other figures are still worth writing
            return {"status_messages": count, "status_read_back": "timed out"}
        size = sum(len(data) for data, _ in kept) // len(kept) if kept else 0
        out: dict[str, Any] = {
            "status_messages": count,
            "status_message_bytes": size,
            "status_bytes": count * size,
        }
        ready_at = [
            stored_at
            for data, stored_at in kept
            if _ready_in(_report_bundles(data) or [], self.bundle, self.deployment)
        ]
        if len(ready_at) >= self.want:
            out["seconds_to_all_reported"] = round(max(ready_at) - started_wall, 3)
        if ready_at:
            # How the Ready reports reached the bus: how many by the end of each second.
            seconds = [max(0, int(at - started_wall)) for at in ready_at]
            per_second = [0] * (max(seconds) + 1)
            for second in seconds:
                per_second[second] += 1
            out["reported_by_second"] = list(itertools.accumulate(per_second))
        return out

    async def _read_back(self) -> list[tuple[bytes, float]]:
        """(data, stored at) of the kept reports from ``first_seq`` on."""
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def collect(msg: Msg) -> None:
            queue.put_nowait(msg)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=collect)
        found: list[tuple[bytes, float]] = []
        seq = self.first_seq
        try:
            while True:
                request = {
                    "seq": seq,
                    "batch": READ_BACK_BATCH,
                    "next_by_subj": subjects.STATUS_ALL,
                }
                await self.nc.publish(
                    f"{_DIRECT_GET}.{subjects.STATUS_STREAM}",
                    json.dumps(request).encode(),
                    reply=inbox,
                )
                last, more = seq - 1, False
                while True:
                    async with asyncio.timeout(READ_BACK_TIMEOUT):
                        msg = await queue.get()
                    headers = msg.headers or {}
                    status = headers.get("Status")
                    if status == "204":  # end of this batch
                        more = int(headers.get("Nats-Num-Pending", "0") or 0) > 0
                        break
                    if status:  # 404: nothing (more) stored from seq on
                        break
                    last = int(headers.get("Nats-Sequence", "0") or 0)
                    stored = datetime.fromisoformat(headers.get("Nats-Time-Stamp", "")).timestamp()
                    found.append((bytes(msg.data), stored))
                if not more:
                    return found
                seq = last + 1
        finally:
            await sub.unsubscribe()
