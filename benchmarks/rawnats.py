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
* each subscription, on receipt, publishes one message of the measured mean
  status-report size on its own subject (``bench.raw.status.<i>``), on its
  own connection, with core NATS;
* one subscriber (the "control plane") counts them; the clock stops at the
  N-th.

So the reference is "fan K messages out to N subscribers and collect N
status-sized replies at one subscriber". It leaves out everything that is
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


async def raw_nats_seconds(
    url: str,
    *,
    clusters: int,
    classes: int,
    connections: int,
    desired_size: int,
    status_size: int,
    timeout: float,
) -> float:
    """Seconds from the first of K fan-out publishes to the N-th status-sized reply."""
    conns: list[Client] = []
    try:
        for _ in range(max(1, connections) + 2):
            conns.append(await nats.connect(servers=[url], name="shoal-bench-raw"))
        publisher, sink, *fleet = conns
        received = 0
        done = asyncio.Event()

        async def collect(msg: Msg) -> None:
            nonlocal received
            received += 1
            if received >= clusters:
                done.set()

        await sink.subscribe(f"{RAW_PREFIX}.status.>", cb=collect)
        status_payload = b"s" * max(MIN_PAYLOAD, status_size)

        def replier(nc: Client, index: int) -> Callable[[Msg], Awaitable[None]]:
            subject = f"{RAW_PREFIX}.status.{index}"

            async def reply(msg: Msg) -> None:
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
        await asyncio.wait_for(done.wait(), timeout)
        return time.perf_counter() - started
    finally:
        for nc in conns:
            with contextlib.suppress(Exception):
                await nc.close()
