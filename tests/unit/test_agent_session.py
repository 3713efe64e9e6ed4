"""The Agent on an in-memory bus: identity, full state, live updates, class moves, status."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeagent.agent import Agent
from edgeagent.bus import Subscription
from edgeagent.desired import DecodedMessages, DesiredState, Scope
from edgeagent.errors import IdentityError
from edgeagent.fanout import Handler
from edgeagent.membus import MemoryBus
from edgeagent.settings import AgentSettings
from edgeagent.simulated import SimulatedCluster
from edgeagent.store import DiskStore, Identity, MemoryBlobCache, MemoryStore
from protocol import subjects
from protocol.classes import ClassSchema, class_of
from protocol.codec import decode, encode, encode_resources
from protocol.errors import DecodeError
from protocol.ids import deployment_id, manifest_id
from protocol.messages import (
    DesiredBundle,
    ErrorReply,
    HelloReply,
    HelloRequest,
    RegisterReply,
    RegisterRequest,
    SchemaMessage,
    StatusReport,
)
from protocol.models import BundleResource, DeploymentOptions
from protocol.states import State

FAST = AgentSettings(
    status_interval=0.02,
    heartbeat_interval=0.05,
    retry_initial=0.02,
    retry_max=0.1,
    observe_interval=0.05,
    observe_interval_not_ready=0.02,
    sim_readiness_delay=0.0,
    request_timeout=1.0,
    connect_timeout=0.5,
    reconnect_check_interval=0.02,
)
LABELS = {"env": "prod"}


class ControlPlane:
    """Plays the control plane on a MemoryBus."""

    def __init__(self, bus: MemoryBus) -> None:
        self.bus = bus
        self.tokens = {"good"}
        self.known: set[str] = set()
        self.registered = 0
        self.rev = 0
        bus.responders[subjects.REGISTER] = self.register
        bus.responders["shoal.v1.agent.*.hello"] = self.hello

    async def register(self, subject: str, data: bytes) -> bytes:
        request = decode(data, RegisterRequest)
        if request.token not in self.tokens:
            return encode(ErrorReply(code="unauthorized", error="unknown or expired token"))
        self.registered += 1
        cid = f"c{self.registered}"
        self.known.add(cid)
        return encode(RegisterReply(cluster_id=cid, secret="s3cret", shard=3))

    async def hello(self, subject: str, data: bytes) -> bytes:
        decode(data, HelloRequest)
        cid = subject.split(".")[3]
        if cid not in self.known:
            return encode(ErrorReply(code="not_found", error="no such cluster"))
        return encode(HelloReply(name="edge-1", shard=3))

    async def desired(
        self, subject: str, name: str, content: str = "a", *, deleted: bool = False
    ) -> DesiredBundle:
        resources = [
            BundleResource(
                name="cm.yaml",
                content=f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {content}}}\n",
            )
        ]
        manifest = manifest_id(resources)
        self.bus.blobs[manifest] = encode_resources(resources)
        self.rev += 1
        message = DesiredBundle(
            bundle=name,
            rev=self.rev,
            deployment_id=deployment_id(manifest, DeploymentOptions()),
            deleted=deleted,
        )
        await self.bus.put(subject, encode(message))
        return message

    def reports(self, cluster_id: str = "c1") -> list[StatusReport]:
        subject = subjects.status(3, cluster_id)
        return [decode(d, StatusReport) for s, d in self.bus.durable if s == subject]


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def make_agent(
    bus: MemoryBus,
    store: MemoryStore | DiskStore,
    *,
    token: str = "good",
    settings: AgentSettings = FAST,
) -> Agent:
    return Agent(
        bus=bus,
        backend=SimulatedCluster(readiness_delay=0.0),
        store=store,
        blob_cache=MemoryBlobCache(),
        settings=settings,
        name="edge-1",
        labels=LABELS,
        token=token,
    )


def bundles(agent: Agent) -> dict[str, State]:
    return {s.bundle: s.state for s in agent.reconciler.statuses()}


def class_subject(bundle: str, schema: ClassSchema | None = None) -> str:
    return subjects.desired(class_of("edge-1", LABELS, schema or ClassSchema()), bundle)


async def test_registers_persists_identity_and_reads_full_state(tmp_path: Path) -> None:
    bus = MemoryBus()
    cp = ControlPlane(bus)
    await cp.desired(class_subject("app"), "app")
    await cp.desired(class_subject("gone"), "gone", deleted=True)
    store = DiskStore(tmp_path)
    async with make_agent(bus, store) as agent:
        await until(lambda: bundles(agent) == {"app": State.READY})
        await until(
            lambda: any(r.bundles and r.bundles[0].state == State.READY for r in cp.reports())
        )
    identity = store.load_identity()
    assert identity == Identity(cluster_id="c1", secret="s3cret", shard=3, name="edge-1")
    assert (tmp_path / "identity.json").stat().st_mode & 0o777 == 0o600
    saved = store.load_desired()
    assert saved is not None and set(saved.class_bundles) == {"app", "gone"}


async def test_unknown_token_fails_clearly() -> None:
    bus = MemoryBus()
    ControlPlane(bus).tokens.clear()
    with pytest.raises(IdentityError, match="unauthorized"):
        async with make_agent(bus, MemoryStore()):
            pass


async def test_forgotten_cluster_registers_again() -> None:
    bus = MemoryBus()
    ControlPlane(bus)
    store = MemoryStore(Identity(cluster_id="old", secret="x", shard=3, name="edge-1"))
    async with make_agent(bus, store) as agent:
        await until(lambda: agent.identity is not None and agent.identity.cluster_id == "c1")
    assert store.identity is not None and store.identity.cluster_id == "c1"


async def test_live_updates_cluster_override_and_tombstone() -> None:
    bus = MemoryBus()
    cp = ControlPlane(bus)
    async with make_agent(bus, MemoryStore()) as agent:
        await until(lambda: agent.syncs == 1)
        first = await cp.desired(class_subject("app"), "app", "a")
        await until(lambda: bundles(agent) == {"app": State.READY})
        override = await cp.desired(subjects.cluster_desired("c1", "app"), "app", "b")
        await until(lambda: agent.reconciler.statuses()[0].deployment_id == override.deployment_id)
        # An older class message does not win over the cluster message, nor go back in rev.
        await bus.put(class_subject("app"), encode(first))
        await asyncio.sleep(0.05)
        assert agent.reconciler.statuses()[0].deployment_id == override.deployment_id
        await cp.desired(subjects.cluster_desired("c1", "app"), "app", deleted=True)
        await until(lambda: agent.reconciler.statuses()[0].deployment_id == first.deployment_id)
        await cp.desired(class_subject("app"), "app", deleted=True)
        await until(lambda: bundles(agent) == {})


async def test_garbage_is_counted_and_dropped() -> None:
    bus = MemoryBus()
    cp = ControlPlane(bus)
    async with make_agent(bus, MemoryStore()) as agent:
        await until(lambda: agent.syncs == 1)
        await bus.put(class_subject("junk"), b"\xc1 not msgpack")
        await bus.put(class_subject("other"), encode(DesiredBundle(bundle="mismatch", rev=1)))
        await bus.put(subjects.SCHEMA, b"garbage")
        assert agent.malformed == 3
        await cp.desired(class_subject("app"), "app")
        await until(lambda: bundles(agent) == {"app": State.READY})


async def test_schema_change_moves_agent_to_its_new_class() -> None:
    bus = MemoryBus()
    cp = ControlPlane(bus)
    async with make_agent(bus, MemoryStore()) as agent:
        await cp.desired(class_subject("old"), "old")
        await until(lambda: bundles(agent) == {"old": State.READY})
        schema = ClassSchema(epoch=1, keys={"env": ("prod",)})
        await cp.desired(class_subject("new", schema), "new")
        await bus.put(subjects.SCHEMA, encode(SchemaMessage(class_schema=schema)))
        await until(lambda: bundles(agent) == {"new": State.READY})
        # Messages for the old class no longer reach it.
        await cp.desired(class_subject("late"), "late")
        await asyncio.sleep(0.05)
        assert bundles(agent) == {"new": State.READY}


async def test_status_reports_batch_and_heartbeats_flow() -> None:
    bus = MemoryBus()
    cp = ControlPlane(bus)
    async with make_agent(bus, MemoryStore()) as agent:
        await cp.desired(class_subject("app"), "app")
        await until(
            lambda: any(r.bundles and r.bundles[0].state == State.READY for r in cp.reports())
        )
        seqs = [r.seq for r in cp.reports()]
        assert seqs == sorted(set(seqs))
        await until(lambda: any(s == subjects.heartbeat(3, "c1") for s, _ in bus.published))
        count = len(cp.reports())
        await asyncio.sleep(0.1)
        assert len(cp.reports()) == count  # nothing changed, nothing sent
        assert agent.reporter.heartbeats_sent > 0


async def test_bus_down_keeps_state_and_reports_full_status_when_back() -> None:
    bus = MemoryBus()
    cp = ControlPlane(bus)
    async with make_agent(bus, MemoryStore()) as agent:
        await cp.desired(class_subject("app"), "app")
        await until(lambda: bundles(agent) == {"app": State.READY})
        await until(lambda: not agent.reporter.dirty)
        bus.go_down()
        agent.backend.inject_drift("app")  # type: ignore[attr-defined]
        await until(lambda: bundles(agent) == {"app": State.MODIFIED})
        sent = len(cp.reports())
        await asyncio.sleep(0.05)
        assert len(cp.reports()) == sent
        bus.come_back()
        await until(lambda: len(cp.reports()) > sent)
        assert cp.reports()[-1].bundles[0].state == State.MODIFIED
        await until(lambda: agent.syncs >= 2)


def test_desired_state_orders_by_rev_and_keeps_live_messages_over_snapshot() -> None:
    state = DesiredState()
    assert state.offer(Scope.CLASS, DesiredBundle(bundle="a", rev=2, deployment_id="x"))
    assert not state.offer(Scope.CLASS, DesiredBundle(bundle="a", rev=1, deployment_id="old"))
    state.begin_snapshot(Scope.CLASS)
    state.offer(Scope.CLASS, DesiredBundle(bundle="b", rev=5, deployment_id="live"))
    state.end_snapshot(Scope.CLASS, [DesiredBundle(bundle="a", rev=3, deployment_id="y")])
    assert {k: v.deployment_id for k, v in state.effective().items()} == {"a": "y", "b": "live"}
    # A snapshot that lacks a bundle (JetStream still storing it) removes nothing ...
    state.begin_snapshot(Scope.CLASS)
    state.end_snapshot(Scope.CLASS, [])
    assert set(state.effective()) == {"a", "b"}
    # ... only a tombstone with a higher rev does.
    state.begin_snapshot(Scope.CLASS)
    state.end_snapshot(Scope.CLASS, [DesiredBundle(bundle="a", rev=4, deleted=True)])
    assert set(state.effective()) == {"b"}


async def test_a_stale_schema_from_the_stream_does_not_undo_a_newer_live_one() -> None:
    bus = MemoryBus()
    cp = ControlPlane(bus)
    new = ClassSchema(epoch=2, keys={"env": ("prod",)})
    old = ClassSchema(epoch=1, keys={})
    async with make_agent(bus, MemoryStore()) as agent:
        await until(lambda: agent.syncs >= 1)
        # The live copy arrives first; the stream still answers with the old one.
        await bus.deliver(subjects.SCHEMA, encode(SchemaMessage(class_schema=new)))
        await bus.put(subjects.SCHEMA, encode(SchemaMessage(class_schema=old)))
        await cp.desired(class_subject("app", new), "app")
        await until(lambda: bundles(agent) == {"app": State.READY})
        assert agent.desired.schema == new


def test_cluster_override_and_its_tombstone_change_what_governs_a_bundle() -> None:
    state = DesiredState()
    assert state.offer(Scope.CLASS, DesiredBundle(bundle="a", rev=1, deployment_id="class"))
    assert state.offer(Scope.CLUSTER, DesiredBundle(bundle="a", rev=1, deployment_id="mine"))
    # A newer class message changes nothing while the cluster's override governs.
    assert not state.offer(Scope.CLASS, DesiredBundle(bundle="a", rev=2, deployment_id="class2"))
    assert state.effective()["a"].deployment_id == "mine"
    # The override's tombstone hands the bundle back to the class message.
    assert state.offer(Scope.CLUSTER, DesiredBundle(bundle="a", rev=2, deleted=True))
    assert state.effective()["a"].deployment_id == "class2"
    # The same content again under a newer rev is still a change (rev is part of it).
    assert state.offer(Scope.CLASS, DesiredBundle(bundle="a", rev=3, deployment_id="class2"))


def test_decoded_messages_decode_a_payload_once_and_never_keep_garbage() -> None:
    decoded = DecodedMessages(size=2)
    payload = encode(DesiredBundle(bundle="web", rev=1, deployment_id="d1"))
    first = decoded.decode(payload)
    assert first.deployment_id == "d1"
    assert decoded.decode(bytes(payload)) is first  # same bytes, same (frozen) message
    with pytest.raises(DecodeError):
        decoded.decode(b"\x93garbage")
    with pytest.raises(DecodeError):  # refused again, not served from the cache
        decoded.decode(b"\x93garbage")
    for rev in (2, 3):  # bounded: the oldest payload goes
        decoded.decode(encode(DesiredBundle(bundle="web", rev=rev, deployment_id="d")))
    again = decoded.decode(payload)
    assert again == first and again is not first


class EarlyDeliveryBus(MemoryBus):
    """A bus whose class subscription delivers a message before ``subscribe`` returns,
    a message the stream has not stored yet (so no snapshot can find it)."""

    def __init__(self, subject: str, payload: bytes) -> None:
        super().__init__()
        self.early = (subject, payload)

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        sub = await super().subscribe(subject, handler)
        if subscribed_to(subject, self.early[0]):
            await handler(*self.early)
        return sub


def subscribed_to(pattern: str, subject: str) -> bool:
    return pattern.split(".")[:4] == subject.split(".")[:4]


async def test_a_message_delivered_while_the_class_subscription_is_made_is_kept() -> None:
    subject = class_subject("app")
    message = DesiredBundle(bundle="app", rev=1, deployment_id="s-" + "0" * 64 + ":" + "0" * 16)
    bus = EarlyDeliveryBus(subject, encode(message))
    ControlPlane(bus)
    async with make_agent(bus, MemoryStore()) as agent:
        await until(lambda: agent.syncs == 1)
        assert set(agent.desired.effective()) == {"app"}


async def test_a_message_stored_after_the_first_read_and_not_delivered_is_found_by_a_recheck() -> (
    None
):
    """Routed just before the subscription reached the server, stored just after the read."""
    bus = MemoryBus()
    cp = ControlPlane(bus)
    settings = FAST.model_copy(update={"snapshot_recheck": 0.05, "resync_interval": 3600.0})
    agent = make_agent(bus, MemoryStore(), settings=settings)
    async with agent:
        await until(lambda: agent.syncs == 1)
        await cp.desired(class_subject("app"), "app")  # stored and delivered
        bus.go_down()  # the next one reaches the stream only
        await cp.desired(class_subject("late"), "late")
        bus.up = True  # back without a reconnect: nothing tells the agent
        await until(lambda: bundles(agent) == {"app": State.READY, "late": State.READY})
        assert agent.syncs == 2
        # One recheck per new subscription: the periodic resync is an hour away now.
        await asyncio.sleep(0.3)
        assert agent.syncs == 2


async def test_a_recheck_that_finds_nothing_new_sends_no_report() -> None:
    bus = MemoryBus()
    cp = ControlPlane(bus)
    await cp.desired(class_subject("app"), "app")
    settings = FAST.model_copy(update={"snapshot_recheck": 0.3, "resync_interval": 3600.0})
    agent = make_agent(bus, MemoryStore(), settings=settings)
    async with agent:
        await until(
            lambda: any(r.bundles and r.bundles[0].state == State.READY for r in cp.reports())
        )
        sent = len(cp.reports())
        await until(lambda: agent.syncs == 2)
        await asyncio.sleep(0.1)
        assert len(cp.reports()) == sent  # a reconnect's read reports in full; a recheck does not
