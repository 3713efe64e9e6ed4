"""The raw NATS reference: the rollout's message pattern with no shoal logic at all.

``raw_nats_seconds`` is measured on the same nats-server, in the same run,
after the simulated fleet has stopped. It moves the same number and size of
messages as the rollout did, in the same shape, with bare nats-py:

* N subscriptions (one per simulated cluster) spread over the same number of
  connections as the fleet used, each subscribed to its class's subject
  (``bench.raw.desired.<k>``, K classes);
* one publisher sends K messages of the measured desired-state message size:
  the server fans them out to the N subscriptions (N deliveries, as the
  rollout's K class messages were);
* each subscription, on receipt, publishes messages of the measured mean
  status-report size on its own subject (``bench.raw.status.<i>``), on its
  own connection, with core NATS: as many in total as the rollout's agents
  sent status reports during it (at least one each; an agent typically
  reports twice, NotReady then Ready), spread evenly;
* one subscriber (the "control plane") counts them, a queue group over one
  connection per 100,000 replies so nats-server never drops it as a slow
  consumer; the clock stops at the last. A connection lost on the way, or
  replies missing at ``--timeout``, is an error in the result, not a figure.

So the reference is "fan K messages out to N subscribers and collect the
rollout's number of status-sized replies at one subscriber". It leaves out everything that is
shoal: decoding, reconciling, the simulated apply and readiness delay, the
status interval, JetStream persistence of status reports, ingest and
aggregation. The ratio ``seconds_to_all_ready / raw_nats_seconds`` is
therefore how much shoal adds on top of moving the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

RAW_PREFIX = "bench.raw"
MIN_PAYLOAD = 1
# Replies one collecting connection takes: nats-server closes a client that falls
# 64 MiB behind (a slow consumer), and at 300,000 clusters one collector did.
SINK_REPLIES_PER_CONNECTION = 100_000


class RawNatsError(Exception):
    """The reference could not be measured: a connection was lost, or replies were missing."""


async def raw_nats_seconds(
    url: str,
    *,
    clusters: int,
    classes: int,
    connections: int,
    desired_size: int,
    status_size: int,
    status_count: int,
    timeout: float,
) -> float:
    """Seconds from the first of K fan-out publishes to the last status-sized reply.

    :class:`RawNatsError` if nats-server closed a connection (every reply after
    that is lost) or the replies did not all arrive within ``timeout``.
    """
    replies_each, extra = divmod(max(status_count, clusters), clusters)
    expected = replies_each * clusters + extra
    sinks = -(-expected // SINK_REPLIES_PER_CONNECTION)
    conns: list[Client] = []
    received = 0
    done = asyncio.Event()
    lost: list[str] = []

    async def disconnected() -> None:
        lost.append("a connection was closed")
        done.set()

    async def error(exc: Exception) -> None:
        lost.append(f"{type(exc).__name__}: {exc}".rstrip(": "))
        done.set()

    try:
        for _ in range(max(1, connections) + 1 + sinks):
            conns.append(
                await nats.connect(
                    servers=[url],
                    name="shoal-bench-raw",
                    allow_reconnect=False,
                    disconnected_cb=disconnected,
                    error_cb=error,
                )
            )
        publisher, collectors, fleet = conns[0], conns[1 : 1 + sinks], conns[1 + sinks :]

        async def collect(msg: Msg) -> None:
            nonlocal received
            received += 1
            if received >= expected:
                done.set()

        for sink in collectors:  # a queue group: each reply reaches one of them
            await sink.subscribe(f"{RAW_PREFIX}.status.>", queue="sink", cb=collect)
        status_payload = b"s" * max(MIN_PAYLOAD, status_size)

        def replier(nc: Client, index: int) -> Callable[[Msg], Awaitable[None]]:
            subject = f"{RAW_PREFIX}.status.{index}"
            replies = replies_each + (1 if index < extra else 0)

            async def reply(msg: Msg) -> None:
                for _ in range(replies):
                    await nc.publish(subject, status_payload)

            return reply

        for index in range(clusters):
            nc = fleet[index % len(fleet)]
            await nc.subscribe(f"{RAW_PREFIX}.desired.{index % classes}", cb=replier(nc, index))
        for nc in conns:
            await nc.flush()
        desired_payload = b"d" * max(MIN_PAYLOAD, desired_size)
        started = time.perf_counter()
        for k in range(classes):
            await publisher.publish(f"{RAW_PREFIX}.desired.{k}", desired_payload)
        await publisher.flush()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            raise RawNatsError(
                f"{received} of {expected} replies arrived within {timeout:g} s"
            ) from None
        seconds = time.perf_counter() - started
        if lost:
            raise RawNatsError(f"{lost[0]} at {received} of {expected} replies")
        return seconds
    finally:
        for nc in conns:
            with contextlib.suppress(Exception):
                await nc.close()
