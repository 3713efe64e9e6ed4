"""Acknowledged publishes (edgeagent.acks) against a real nats-server and JetStream."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from edgeagent import acks as acks_mod
from edgeagent.acks import Acks
from edgeagent.bus import NatsBus
from edgeagent.errors import BusRejected, BusUnavailable
from edgeagent.settings import AgentSettings


@pytest.fixture
async def stream(nc: Client) -> str:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="REPORTS", subjects=["reports.>"], max_msg_size=64))
    return "REPORTS"


async def test_publishes_are_stored_and_share_one_reply_subscription(
    nc: Client, stream: str
) -> None:
    acks = Acks.of(nc)
    assert Acks.of(nc) is acks
    subscriptions = len(nc._subs)
    await asyncio.gather(
        *(acks.publish(f"reports.c{i}", f"r{i}".encode(), timeout=5) for i in range(200))
    )
    assert len(nc._subs) == subscriptions + 1  # one inbox for all 200
    info = await nc.jetstream().stream_info(stream)
    assert info.state.messages == 200
    last = await nc.jetstream().get_last_msg(stream, "reports.c123")
    assert last.data == b"r123"
    assert acks.pending == 0


async def test_a_refused_publish_names_subject_and_reason(nc: Client, stream: str) -> None:
    with pytest.raises(BusRejected, match=r"reports\.big.*maximum") as caught:
        await Acks.of(nc).publish("reports.big", b"x" * 100, timeout=5)
    assert caught.value.code  # JetStream's error code
    info = await nc.jetstream().stream_info(stream)
    assert info.state.messages == 0


async def test_no_stream_for_the_subject_is_unavailable(nc: Client) -> None:
    with pytest.raises(BusUnavailable, match=r"nowhere\.x.*no stream"):
        await Acks.of(nc).publish("nowhere.x", b"lost", timeout=5)


async def test_a_missing_acknowledgement_times_out_and_a_late_one_is_ignored(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acks_mod, "SWEEP", 0.05)
    held: list[Msg] = []

    async def silent(msg: Msg) -> None:  # takes the message, answers nothing (yet)
        held.append(msg)

    await nc.subscribe("quiet.>", cb=silent)
    acks = Acks.of(nc)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BusUnavailable, match=r"quiet\.x: no acknowledgement within 0.3 s"):
        await acks.publish("quiet.x", b"?", timeout=0.3)
    assert 0.3 <= loop.time() - started < 2.0
    assert acks.pending == 0
    # The acknowledgement arriving after all changes nothing, and the next publish works.
    assert held and held[0].reply
    await nc.publish(held[0].reply, b'{"stream":"S","seq":1}')
    await nc.flush()

    async def answer(msg: Msg) -> None:
        await msg.respond(b'{"stream":"S","seq":2}')

    await nc.subscribe("answered.>", cb=answer)
    await acks.publish("answered.x", b"!", timeout=5)
    assert acks.pending == 0


async def test_bus_publish_durable_goes_through_the_connections_acks(
    nc: Client, stream: str
) -> None:
    bus = NatsBus(AgentSettings(), client=nc)
    await bus.publish_durable("reports.bus", b"ok")
    assert (await nc.jetstream().get_last_msg(stream, "reports.bus")).data == b"ok"
    with pytest.raises(BusRejected, match=r"reports\.bus"):
        await bus.publish_durable("reports.bus", b"y" * 100)


async def test_abandoning_fails_waiting_publishes_at_once(nc: Client) -> None:
    arrived = asyncio.Event()

    async def silent(msg: Msg) -> None:
        arrived.set()

    await nc.subscribe("quiet.>", cb=silent)
    acks = Acks.of(nc)
    waiting = asyncio.create_task(acks.publish("quiet.y", b"?", timeout=60))
    await asyncio.wait_for(arrived.wait(), 5)
    assert acks.pending == 1
    acks.abandon("the connection was re-established")
    with pytest.raises(BusUnavailable, match=r"quiet\.y: the connection was re-established"):
        await asyncio.wait_for(waiting, 2)
    assert acks.pending == 0
