"""Reading the last message of every subject matching a filter.

The control plane reads whole streams this way on start-up (what it has
published, what clusters last reported). It uses an ephemeral pull consumer
with ``deliver_policy=last_per_subject`` and no acks, which JetStream removes
again when it is unsubscribed; only the control plane does this, agents use
direct gets.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from controlplane.errors import BusError

BATCH = 1000


@dataclass(frozen=True, slots=True)
class StoredMessage:
    subject: str
    seq: int
    data: bytes


async def last_per_subject(
    js: JetStreamContext, stream: str, subject_filter: str, *, timeout: float
) -> list[StoredMessage]:
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=60.0,
        mem_storage=True,
    )
    sub = await js.pull_subscribe(subject_filter, stream=stream, config=config)
    out: list[StoredMessage] = []
    try:
        info = await sub.consumer_info()
        remaining = info.num_pending or 0
        while remaining > 0:
            try:
                batch = await sub.fetch(min(BATCH, remaining), timeout=timeout)
            except (TimeoutError, NatsTimeoutError) as exc:
                raise BusError(f"reading {stream} ({subject_filter}) timed out") from exc
            for msg in batch:
                out.append(StoredMessage(msg.subject, msg.metadata.sequence.stream, msg.data))
                remaining = msg.metadata.num_pending
    finally:
        await sub.unsubscribe()
    return out
