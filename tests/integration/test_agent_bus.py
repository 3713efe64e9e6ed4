"""The edge agent against a real nats-server; the test plays the control plane."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from controlplane.embedded import EmbeddedNats
from controlplane.streams import ensure
from edgeagent.agent import Agent
from edgeagent.bus import NatsBus
from edgeagent.errors import RegistrationRejected
from edgeagent.settings import AgentSettings
from edgeagent.simfleet import SimulatedFleet
from edgeagent.simulated import SimulatedCluster
from protocol import subjects
from protocol.classes import ClassSchema, class_of
from protocol.codec import decode, encode, encode_resources
from protocol.ids import deployment_id, manifest_id
from protocol.messages import (
    DesiredBundle,
    ErrorReply,
    Heartbeat,
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
    status_interval=0.05,
    heartbeat_interval=0.2,
    retry_initial=0.05,
    retry_max=0.2,
    observe_interval=0.1,
    observe_interval_not_ready=0.03,
    sim_readiness_delay=0.05,
    request_timeout=2.0,
    connect_timeout=3.0,
    reconnect_wait=0.1,
    reconnect_check_interval=0.05,
    drain_timeout=1.0,
)
LABELS = {"env": "prod"}


class FakeControlPlane:
    """Answers register and hello, stores blobs, publishes desired state."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.tokens = {"good"}
        self.clusters: dict[str, str] = {}  # cluster id -> name
        self.rev = 0

    async def start(self) -> None:
        self.stores = await ensure(self.js)
        await self.nc.subscribe(subjects.REGISTER, cb=self._register)
        await self.nc.subscribe("shoal.v1.agent.*.hello", cb=self._hello)

    async def _register(self, msg: Msg) -> None:
        request = decode(msg.data, RegisterRequest)
        if request.token not in self.tokens:
            await msg.respond(encode(ErrorReply(code="unauthorized", error="token expired")))
            return
        cid = f"c{len(self.clusters) + 1}"
        self.clusters[cid] = request.name
        await msg.respond(encode(RegisterReply(cluster_id=cid, secret="s", shard=1)))

    async def _hello(self, msg: Msg) -> None:
        decode(msg.data, HelloRequest)
        cid = msg.subject.split(".")[3]
        if cid not in self.clusters:
            await msg.respond(encode(ErrorReply(code="not_found", error="gone")))
            return
        await msg.respond(encode(HelloReply(name=self.clusters[cid], shard=1)))

    async def desired(
        self,
        subject: str,
        bundle: str,
        content: str = "a",
        *,
        deleted: bool = False,
        options: DeploymentOptions | None = None,
    ) -> DesiredBundle:
        options = options or DeploymentOptions()
        resources = [
            BundleResource(
                name="cm.yaml",
                content=f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {content}}}\n",
            )
        ]
        manifest = manifest_id(resources)
        await self.stores.blobs.put(manifest, encode_resources(resources))
        self.rev += 1
        message = DesiredBundle(
            bundle=bundle,
            rev=self.rev,
            deployment_id=deployment_id(manifest, options),
            options=options,
            deleted=deleted,
        )
        await self.js.publish(subject, encode(message))
        return message

    async def schema(self, schema: ClassSchema) -> None:
        await self.js.publish(subjects.SCHEMA, encode(SchemaMessage(class_schema=schema)))

    async def status(self, cluster_id: str) -> StatusReport | None:
        try:
            raw = await self.js.get_last_msg(
                subjects.STATUS_STREAM, subjects.status(1, cluster_id), direct=True
            )
        except nats.js.errors.NotFoundError:
            return None
        return decode(raw.data, StatusReport)


@pytest.fixture
async def fake_cp(nats_server: EmbeddedNats) -> AsyncIterator[FakeControlPlane]:
    nc = await nats.connect(nats_server.url)
    cp = FakeControlPlane(nc)
    await cp.start()
    try:
        yield cp
    finally:
        await nc.close()


def class_subject(bundle: str, schema: ClassSchema | None = None, name: str = "edge") -> str:
    return subjects.desired(class_of(name, LABELS, schema or ClassSchema()), bundle)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def until_status(
    cp: FakeControlPlane, cluster_id: str, want: dict[str, State], timeout: float = 5.0
) -> StatusReport:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        report = await cp.status(cluster_id)
        if report is not None and {b.bundle: b.state for b in report.bundles} == want:
            return report
        if loop.time() > deadline:
            raise AssertionError(f"status of {cluster_id} is {report}, want {want}")
        await asyncio.sleep(0.02)


def make_agent(url: str, state_dir: Path, token: str | None = "good") -> Agent:
    return Agent.from_state_dir(
        state_dir,
        url=url,
        backend=SimulatedCluster(readiness_delay=FAST.sim_readiness_delay),
        settings=FAST,
        name="edge",
        labels=LABELS,
        token=token,
    )


async def test_first_start_registers_and_reads_state_published_before(
    nats_server: EmbeddedNats, fake_cp: FakeControlPlane, tmp_path: Path
) -> None:
    await fake_cp.desired(class_subject("app"), "app")
    await fake_cp.desired(class_subject("old"), "old", deleted=True)
    override = await fake_cp.desired(subjects.cluster_desired("c1", "db"), "db", "override")
    async with make_agent(nats_server.url, tmp_path / "agent") as agent:
        assert agent.identity is not None and agent.identity.cluster_id == "c1"
        report = await until_status(fake_cp, "c1", {"app": State.READY, "db": State.READY})
        assert {b.bundle: b.deployment_id for b in report.bundles}["db"] == override.deployment_id
    identity = tmp_path / "agent" / "identity.json"
    assert identity.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "agent" / "desired.json").exists()
    assert len(list((tmp_path / "agent" / "blobs").iterdir())) == 2


async def test_unknown_token_is_refused(
    nats_server: EmbeddedNats, fake_cp: FakeControlPlane, tmp_path: Path
) -> None:
    with pytest.raises(RegistrationRejected, match="unauthorized") as info:
        async with make_agent(nats_server.url, tmp_path / "agent", token="bad"):
            pass
    assert info.value.code == "unauthorized"
    assert not (tmp_path / "agent" / "identity.json").exists()


async def test_live_updates_tombstones_schema_change_and_garbage(
    nats_server: EmbeddedNats, fake_cp: FakeControlPlane, tmp_path: Path
) -> None:
    async with make_agent(nats_server.url, tmp_path / "agent") as agent:
        await until(lambda: agent.syncs >= 1)
        await fake_cp.desired(class_subject("app"), "app")
        await until_status(fake_cp, "c1", {"app": State.READY})
        changed = await fake_cp.desired(class_subject("app"), "app", "b")
        report = await until_status(fake_cp, "c1", {"app": State.READY})
        while report.bundles[0].deployment_id != changed.deployment_id:
            report = await until_status(fake_cp, "c1", {"app": State.READY})
        await fake_cp.js.publish(class_subject("junk"), b"\x93\x01garbage")
        await until(lambda: agent.malformed == 1)
        await fake_cp.desired(class_subject("app"), "app", deleted=True)
        await until_status(fake_cp, "c1", {})
        # A schema that tells env=prod apart moves the agent to a new class.
        schema = ClassSchema(epoch=1, keys={"env": ("prod",)})
        await fake_cp.desired(class_subject("moved", schema), "moved")
        await fake_cp.schema(schema)
        await until_status(fake_cp, "c1", {"moved": State.READY})
        assert agent.malformed == 1


async def test_restart_with_bus_down_enforces_saved_state(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = EmbeddedNats(store_dir=tmp_path / "nats", port=port)
    await server.start()
    try:
        nc = await nats.connect(server.url)
        cp = FakeControlPlane(nc)
        await cp.start()
        await cp.desired(class_subject("app"), "app")
        async with make_agent(server.url, tmp_path / "agent"):
            await until_status(cp, "c1", {"app": State.READY})
        await nc.close()
        await server.stop()

        # Bus down: a restarted agent enforces what it saved, on a fresh (empty) cluster.
        agent = make_agent(server.url, tmp_path / "agent")
        async with agent:
            await until(agent.reconciler.all_ready)
            backend = agent.backend
            assert isinstance(backend, SimulatedCluster)
            assert await backend.deployed_bundles() == {"app"}
            assert not agent.bus.connected

            await server.start()
            nc = await nats.connect(server.url)
            cp = FakeControlPlane(nc)
            cp.clusters["c1"] = "edge"
            await cp.start()
            await until(lambda: agent.bus.connected, timeout=8.0)
            await until(lambda: agent.syncs >= 1, timeout=5.0)
            report = await until_status(cp, "c1", {"app": State.READY})
            assert report.sent_at > 0
        await nc.close()
    finally:
        await server.stop()


async def test_snapshot_pages_beyond_multi_last_limit(
    nats_server: EmbeddedNats, fake_cp: FakeControlPlane
) -> None:
    for i in range(1100):
        await fake_cp.js.publish(f"shoal.v1.desired.big.b{i}", b"x")
    await fake_cp.js.publish("shoal.v1.desired.big.b7", b"newer")
    nc = await nats.connect(nats_server.url)
    try:
        bus = NatsBus(FAST, client=nc)
        found = dict(await bus.last_messages("shoal.v1.desired.big.*"))
        assert len(found) == 1100
        assert found["shoal.v1.desired.big.b7"] == b"newer"
        assert await bus.last_messages("shoal.v1.desired.none.*") == []
        assert await bus.last_message("shoal.v1.desired.none.x") is None
    finally:
        await nc.close()


async def test_simulated_fleet_shares_a_connection_and_reports_per_cluster(
    nats_server: EmbeddedNats, fake_cp: FakeControlPlane
) -> None:
    await fake_cp.desired(subjects.desired(class_of("x", {}, ClassSchema()), "app"), "app")
    # With an empty schema every cluster is in one class, whatever its name.
    async with SimulatedFleet(
        count=20,
        token="good",
        settings=FAST,
        url=nats_server.url,
        connections=2,
        labels_for=lambda i: {"rack": str(i % 3)},
    ) as fleet:
        assert len(fleet.agents) == 20
        await until(lambda: fleet.ready_count() == 20)
        for cid in fake_cp.clusters:
            await until_status(fake_cp, cid, {"app": State.READY})
        assert sorted(fake_cp.clusters.values())[0] == "sim-00000"


async def test_reconnect_resyncs_and_sends_a_full_report(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = EmbeddedNats(store_dir=tmp_path / "nats", port=port)
    await server.start()
    try:
        nc = await nats.connect(server.url)
        cp = FakeControlPlane(nc)
        await cp.start()
        await cp.desired(class_subject("app"), "app")
        async with make_agent(server.url, tmp_path / "agent") as agent:
            first = await until_status(cp, "c1", {"app": State.READY})
            syncs = agent.syncs
            await nc.close()
            await server.stop()
            await server.start()
            nc = await nats.connect(server.url)
            cp = FakeControlPlane(nc)
            cp.clusters["c1"] = "edge"
            await cp.start()
            await until(lambda: agent.syncs > syncs, timeout=8.0)
            report = await until_status(cp, "c1", {"app": State.READY})
            while report.seq == first.seq:
                report = await until_status(cp, "c1", {"app": State.READY})
            await cp.desired(class_subject("more"), "more")
            await until_status(cp, "c1", {"app": State.READY, "more": State.READY})
        await nc.close()
    finally:
        await server.stop()


async def test_driven_heartbeats_are_still_one_message_per_cluster(
    nats_server: EmbeddedNats, fake_cp: FakeControlPlane
) -> None:
    """The benchmark's paced heartbeats: each cluster's own messages, on its own subject."""
    await fake_cp.desired(subjects.desired(class_of("x", {}, ClassSchema()), "app"), "app")
    seen: dict[str, list[int]] = {}
    nc = await nats.connect(nats_server.url)

    async def record(msg: Msg) -> None:
        seen.setdefault(msg.subject, []).append(decode(msg.data, Heartbeat).seq)

    await nc.subscribe("shoal.v1.hb.>", cb=record)
    settings = FAST.model_copy(update={"heartbeat_interval": 0.1})
    try:
        async with SimulatedFleet(
            count=20, token="good", settings=settings, url=nats_server.url, driven_heartbeats=True
        ) as fleet:
            driver = asyncio.create_task(fleet.drive_heartbeats(batch=7))
            await until(lambda: len(seen) == 20 and min(map(len, seen.values())) >= 3, timeout=10)
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver
            cluster_ids = {a.identity.cluster_id for a in fleet.agents if a.identity}
    finally:
        await nc.close()
    assert {subject.rsplit(".", 1)[1] for subject in seen} == cluster_ids
    assert all(seqs == sorted(set(seqs)) for seqs in seen.values())  # each its own sequence
