"""Shared subscriptions (edgeagent.fanout) on a real nats-server."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from nats.aio.msg import Msg

from edgeagent.bus import NatsBus
from edgeagent.fanout import Fanout
from edgeagent.settings import AgentSettings


class Inbox:
    def __init__(self, *, fail: bool = False) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.fail = fail
        self.arrived = asyncio.Event()

    async def __call__(self, subject: str, data: bytes) -> None:
        self.got.append((subject, data))
        self.arrived.set()
        if self.fail:
            raise RuntimeError("a broken handler")


async def barrier(nc: Client) -> None:
    """Return once the server has processed everything ``nc`` sent before.

    Not ``nc.flush()``: nats-py sends its PING ahead of commands still buffered,
    so the PONG can come back before a SUB just made reaches the server.
    """
    inbox, echoed = nc.new_inbox(), asyncio.Event()

    async def echo(msg: Msg) -> None:
        echoed.set()

    sub = await nc.subscribe(inbox, cb=echo)
    await nc.publish(inbox, b"")
    await asyncio.wait_for(echoed.wait(), 5)
    await sub.unsubscribe()


async def publish_and_settle(
    nc: Client, publisher: Client, subject: str, data: bytes, expect: list[Inbox]
) -> None:
    """Publish; wait until every inbox in ``expect`` got it, and a moment for the others."""
    await barrier(nc)
    for box in expect:
        box.arrived.clear()
    await publisher.publish(subject, data)
    await publisher.flush()
    await asyncio.wait_for(asyncio.gather(*(box.arrived.wait() for box in expect)), 5)
    await nc.flush()
    await asyncio.sleep(0.05)


async def test_buses_on_one_connection_share_a_subscription_per_subject(
    nc: Client, publisher_nc: Client
) -> None:
    fanout = Fanout(nc)
    buses = [NatsBus(AgentSettings(), client=nc, fanout=fanout) for _ in range(3)]
    inboxes = [Inbox(fail=(i == 0)) for i in range(3)]
    subs = [
        await bus.subscribe("desired.c1.*", box) for bus, box in zip(buses, inboxes, strict=True)
    ]
    own = Inbox()
    await buses[0].subscribe("cluster.x.desired.*", own)
    assert fanout.subscriptions == 2 and fanout.subscribers("desired.c1.*") == 3

    await publish_and_settle(nc, publisher_nc, "desired.c1.web", b"v1", inboxes)
    # Every handler got it, the one that raised did not stop the others.
    assert [box.got for box in inboxes] == [[("desired.c1.web", b"v1")]] * 3
    assert own.got == []

    await subs[1].unsubscribe()
    await publish_and_settle(nc, publisher_nc, "desired.c1.web", b"v2", [inboxes[0], inboxes[2]])
    assert [len(box.got) for box in inboxes] == [2, 1, 2]

    await subs[0].unsubscribe()
    await subs[2].unsubscribe()
    assert fanout.subscriptions == 1  # the last one out unsubscribed from NATS
    await publish_and_settle(nc, publisher_nc, "desired.c1.web", b"v3", [])
    assert [len(box.got) for box in inboxes] == [2, 1, 2]
    # Subscribing again makes a new subscription that delivers.
    again = Inbox()
    await buses[1].subscribe("desired.c1.*", again)
    await publish_and_settle(nc, publisher_nc, "desired.c1.web", b"v4", [again])
    assert again.got == [("desired.c1.web", b"v4")]
    assert fanout.subscriptions == 2


async def test_concurrent_first_subscribers_all_wait_for_the_subscription(
    nc: Client, publisher_nc: Client
) -> None:
    fanout = Fanout(nc)
    inboxes = [Inbox() for _ in range(50)]
    await asyncio.gather(*(fanout.subscribe("desired.c2.*", box) for box in inboxes))
    assert fanout.subscriptions == 1
    await publish_and_settle(nc, publisher_nc, "desired.c2.web", b"x", inboxes)
    assert all(box.got == [("desired.c2.web", b"x")] for box in inboxes)
