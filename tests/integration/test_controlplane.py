"""The control plane against a real nats-server, with the test playing agents and CLI."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from controlplane.errors import ControlPlaneError
from controlplane.server import ControlPlane
from controlplane.settings import ServerSettings
from protocol import admin, codec, subjects
from protocol.ids import manifest_of
from protocol.messages import DesiredBundle, ErrorReply, RegisterReply
from protocol.states import State
from tests.integration import cp_helpers as h


async def eventually(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {result!r}")
        await asyncio.sleep(0.05)


async def test_tokens_gate_registration(control_plane: ControlPlane, nc: Client) -> None:
    token = await h.create_token(nc)
    ok = await h.register(nc, token, "shop-1", {"env": "prod"})
    assert isinstance(ok, RegisterReply)

    unknown = await h.register(nc, "shoal_not-a-token", "shop-2")
    assert isinstance(unknown, ErrorReply)
    assert unknown.code == "unauthorized"
    assert "unknown registration token" in unknown.error

    short = await h.create_token(nc, ttl=0.05)
    await asyncio.sleep(0.1)
    expired = await h.register(nc, short, "shop-3")
    assert isinstance(expired, ErrorReply)
    assert "expired" in expired.error
    assert set(await h.clusters(nc)) == {"shop-1"}


async def test_rollout_publishes_once_per_label_class(
    control_plane: ControlPlane, nc: Client
) -> None:
    token = await h.create_token(nc)
    envs, regions = ("prod", "dev"), ("eu", "us")
    registrations = []
    for i in range(1000):
        labels = {
            "env": envs[i % 2],
            "region": regions[(i // 2) % 2],
            "shop": f"s{i}",  # read by no selector: must not split classes
        }
        registrations.append(h.register(nc, token, f"shop-{i}", labels))
    for reply in await asyncio.gather(*registrations):
        assert isinstance(reply, RegisterReply)

    # Make both label keys part of the schema first, so the 1,000 clusters fall in
    # 4 classes (env x region).
    first = await h.apply_bundle(
        nc, "base", h.resources("0"), targets=["env in (prod,dev),region in (eu,us)"]
    )
    assert isinstance(first, admin.BundleApplied)
    assert len(control_plane.fleet.registry.classes) == 4

    seen: list[Msg] = []

    async def collect(msg: Msg) -> None:
        seen.append(msg)

    sub = await nc.subscribe(f"{subjects.PREFIX}.desired.*.web", cb=collect)
    reply = await h.apply_bundle(nc, "web", h.resources("1"), targets=["env in (prod,dev)"])
    assert isinstance(reply, admin.BundleApplied)
    await nc.flush()
    await asyncio.sleep(0.3)
    assert 1 <= len(seen) <= 4
    assert reply.published <= 5  # at most 4 desired messages plus a schema update

    # Unchanged re-apply publishes nothing.
    seen.clear()
    again = await h.apply_bundle(nc, "web", h.resources("1"), targets=["env in (prod,dev)"])
    assert isinstance(again, admin.BundleApplied)
    assert not again.changed
    await asyncio.sleep(0.2)
    assert seen == []
    await sub.unsubscribe()


async def test_selector_picks_classes_and_status_counts(
    control_plane: ControlPlane, nc: Client
) -> None:
    token = await h.create_token(nc)
    prod = await h.register(nc, token, "prod-1", {"env": "prod"})
    dev = await h.register(nc, token, "dev-1", {"env": "dev"})
    assert isinstance(prod, RegisterReply) and isinstance(dev, RegisterReply)
    applied = await h.apply_bundle(nc, "web", h.resources("1"), targets=["env=prod"])
    assert isinstance(applied, admin.BundleApplied)
    (deployment,) = applied.deployment_ids

    summary = (await h.bundles(nc))["web"]
    assert summary.targeted == 1
    assert summary.states == {State.WAIT_APPLIED: 1}
    listed = await h.clusters(nc)
    assert listed["prod-1"].bundles == {"web": State.WAIT_APPLIED}
    assert listed["dev-1"].bundles == {}

    # The desired state for prod's class is on the bus, and dev's class has none.
    prod_class = listed["prod-1"].class_id
    js = nc.jetstream()
    stored = await js.get_last_msg(subjects.DESIRED_STREAM, subjects.desired(prod_class, "web"))
    message = codec.decode(stored.data or b"", DesiredBundle)
    assert message.deployment_id == deployment

    await h.report(nc, prod, {"web": (deployment, State.NOT_READY)})

    async def not_ready() -> bool:
        return (await h.bundles(nc))["web"].states == {State.NOT_READY: 1}

    await eventually(not_ready)
    await h.report(nc, prod, {"web": (deployment, State.READY)}, seq=2)

    async def ready() -> bool:
        return (await h.bundles(nc))["web"].states == {State.READY: 1}

    await eventually(ready)

    # A new version: the old report now counts as out of sync.
    updated = await h.apply_bundle(nc, "web", h.resources("2"), targets=["env=prod"])
    assert isinstance(updated, admin.BundleApplied)
    assert updated.deployment_ids != applied.deployment_ids
    assert (await h.bundles(nc))["web"].states == {State.OUT_OF_SYNC: 1}


async def test_garbage_on_status_subject_is_counted_and_dropped(
    control_plane: ControlPlane, nc: Client
) -> None:
    token = await h.create_token(nc)
    reg = await h.register(nc, token, "shop-1")
    assert isinstance(reg, RegisterReply)
    applied = await h.apply_bundle(nc, "web", h.resources())
    assert isinstance(applied, admin.BundleApplied)
    await h.report(nc, reg, {"web": (applied.deployment_ids[0], State.READY)})

    async def ready() -> bool:
        return (await h.bundles(nc))["web"].states == {State.READY: 1}

    await eventually(ready)

    js = nc.jetstream()
    await js.publish(subjects.status(reg.shard, reg.cluster_id), b"\xc1garbage")
    await nc.publish(subjects.heartbeat(reg.shard, reg.cluster_id), b"not msgpack")
    await nc.publish(subjects.heartbeat(reg.shard, "unknowncluster"), b"\x93\x01\xa2hb\x80")

    async def dropped() -> dict[str, int] | None:
        counters = await h.stats(nc)
        total = counters.get("status_dropped", 0) + counters.get("heartbeat_dropped", 0)
        return counters if total >= 3 else None

    counters = await eventually(dropped)
    assert counters["status_dropped"] == 1
    assert counters["heartbeat_dropped"] == 2
    assert (await h.bundles(nc))["web"].states == {State.READY: 1}


async def test_overdue_heartbeat_marks_cluster_offline(
    control_plane: ControlPlane, nc: Client
) -> None:
    token = await h.create_token(nc)
    reg = await h.register(nc, token, "shop-1")
    assert isinstance(reg, RegisterReply)
    await h.heartbeat(nc, reg)

    async def offline() -> bool:
        return (await h.clusters(nc))["shop-1"].offline

    await eventually(offline, timeout=5)
    await h.heartbeat(nc, reg, seq=2)

    async def online() -> bool:
        return not (await h.clusters(nc))["shop-1"].offline

    await eventually(online, timeout=5)


async def test_restart_keeps_bundles_clusters_and_tokens(
    cp_settings: ServerSettings, nc: Client
) -> None:
    async with ControlPlane(cp_settings):
        token = await h.create_token(nc)
        reg = await h.register(nc, token, "shop-1", {"env": "prod"})
        assert isinstance(reg, RegisterReply)
        applied = await h.apply_bundle(nc, "web", h.resources(), targets=["env=prod"])
        assert isinstance(applied, admin.BundleApplied)
        await h.report(nc, reg, {"web": (applied.deployment_ids[0], State.READY)})

        async def ready() -> bool:
            return (await h.bundles(nc))["web"].states == {State.READY: 1}

        await eventually(ready)
        publishes = (await h.stats(nc))["desired_publishes"]
        assert publishes >= 1

    async with ControlPlane(cp_settings):
        assert (await h.bundles(nc))["web"].deployment_ids == applied.deployment_ids
        assert set(await h.clusters(nc)) == {"shop-1"}
        await eventually(ready)  # state recovered from the status stream
        # Nothing is republished for unchanged state.
        assert (await h.stats(nc))["desired_publishes"] == 0
        again = await h.register(nc, token, "shop-2")
        assert isinstance(again, RegisterReply)


async def test_invalid_bundle_is_rejected_whole(control_plane: ControlPlane, nc: Client) -> None:
    good = await h.apply_bundle(nc, "web", h.resources("1"))
    assert isinstance(good, admin.BundleApplied)
    broken = h.resources(
        files=[
            ("a.yaml", h.CONFIGMAP.format(name="a", value="1")),
            ("b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b\n"),
        ]
    )
    reply = await h.apply_bundle(nc, "web", broken)
    assert isinstance(reply, ErrorReply)
    assert reply.code == "invalid"
    assert "b.yaml" in reply.error
    nokind = h.resources(files=[("c.yaml", "apiVersion: v1\nmetadata:\n  name: c\n")])
    reply = await h.apply_bundle(nc, "web", nokind)
    assert isinstance(reply, ErrorReply)
    assert "c.yaml (document 1)" in reply.error and "'kind'" in reply.error
    assert (await h.bundles(nc))["web"].deployment_ids == good.deployment_ids


async def test_report_order_follows_the_stream_not_the_agent_clock(
    control_plane: ControlPlane, nc: Client
) -> None:
    token = await h.create_token(nc)
    reg = await h.register(nc, token, "shop-1")
    assert isinstance(reg, RegisterReply)
    applied = await h.apply_bundle(nc, "web", h.resources())
    assert isinstance(applied, admin.BundleApplied)
    deployment = applied.deployment_ids[0]
    # An edge device whose clock ran a day ahead, then was corrected.
    await h.report(nc, reg, {"web": (deployment, State.NOT_READY)}, seq=5, sent_at_offset=86400)
    await h.report(nc, reg, {"web": (deployment, State.READY)}, seq=1)

    async def ready() -> bool:
        return (await h.bundles(nc))["web"].states == {State.READY: 1}

    await eventually(ready)


async def test_a_restart_does_not_bring_dead_clusters_back_online(
    cp_settings: ServerSettings, nc: Client
) -> None:
    async with ControlPlane(cp_settings):
        token = await h.create_token(nc)
        reg = await h.register(nc, token, "shop-1")
        assert isinstance(reg, RegisterReply)
        applied = await h.apply_bundle(nc, "web", h.resources())
        assert isinstance(applied, admin.BundleApplied)
        await h.report(nc, reg, {"web": (applied.deployment_ids[0], State.READY)})

        async def offline() -> bool:
            return (await h.clusters(nc))["shop-1"].offline

        await eventually(offline, timeout=5)
        last_seen = (await h.clusters(nc))["shop-1"].last_seen

    async with ControlPlane(cp_settings):
        await eventually(offline, timeout=5)
        await asyncio.sleep(cp_settings.heartbeat_timeout)
        after = (await h.clusters(nc))["shop-1"]
        assert after.offline
        assert after.last_seen == last_seen  # the replayed report is old news
        assert (await h.bundles(nc))["web"].states == {State.OFFLINE: 1}


async def test_a_second_replica_answers_status_like_the_first(
    control_plane: ControlPlane, cp_settings: ServerSettings, nc: Client
) -> None:
    token = await h.create_token(nc)
    reg = await h.register(nc, token, "shop-1", {"env": "prod"})
    assert isinstance(reg, RegisterReply)
    applied = await h.apply_bundle(nc, "web", h.resources(), targets=["env=prod"])
    assert isinstance(applied, admin.BundleApplied)
    await h.report(nc, reg, {"web": (applied.deployment_ids[0], State.READY)})

    replica = cp_settings.model_copy(update={"replica_id": "second"})
    async with ControlPlane(replica) as second:
        assert second.fleet.desired == control_plane.fleet.desired
        assert not second.fleet.leader
        # Whichever replica answers, the fleet-wide view is the same.
        for _ in range(6):
            summary = (await h.bundles(nc))["web"]
            assert summary.states == {State.READY: 1}


async def test_a_replica_with_another_shard_count_is_refused(
    control_plane: ControlPlane, cp_settings: ServerSettings
) -> None:
    other = cp_settings.model_copy(update={"shards": cp_settings.shards * 2})
    with pytest.raises(ControlPlaneError, match=f"--shards {cp_settings.shards}"):
        async with ControlPlane(other):
            pass


async def test_a_report_that_beats_its_registration_is_kept_until_the_cluster_is_known(
    control_plane: ControlPlane, nc: Client
) -> None:
    """With several replicas, a shard's owner may read a cluster's first report before its
    watch of the cluster bucket shows the registration another replica took."""
    token = await h.create_token(nc)
    reg = await h.register(nc, token, "shop-1", {"env": "prod"})
    assert isinstance(reg, RegisterReply)
    applied = await h.apply_bundle(nc, "web", h.resources("1"))
    assert isinstance(applied, admin.BundleApplied)
    registry = control_plane.fleet.registry
    record = registry.clusters.pop(reg.cluster_id)  # this replica has not seen it yet

    await h.report(nc, reg, {"web": (applied.deployment_ids[0], State.READY)})

    async def parked() -> bool:
        return (await h.stats(nc)).get("status_parked", 0) >= 1

    await eventually(parked)
    assert (await h.bundles(nc))["web"].states.get(State.READY, 0) == 0

    registry.clusters[reg.cluster_id] = record  # the watch catches up

    async def ready() -> bool:
        return (await h.bundles(nc))["web"].states.get(State.READY, 0) == 1

    await eventually(ready, timeout=5)
    assert (await h.stats(nc)).get("status_dropped", 0) == 0


async def test_a_report_the_replica_missed_is_read_back_when_a_heartbeat_announces_it(
    control_plane: ControlPlane, nc: Client
) -> None:
    """An agent sends no report while nothing changes: a lost one would leave its cluster
    counted wrong for good, so a heartbeat announcing an unseen report fetches it."""
    token = await h.create_token(nc)
    reg = await h.register(nc, token, "shop-1", {"env": "prod"})
    assert isinstance(reg, RegisterReply)
    applied = await h.apply_bundle(nc, "web", h.resources("1"))
    assert isinstance(applied, admin.BundleApplied)
    deployment = applied.deployment_ids[0]
    await h.report(nc, reg, {"web": (deployment, State.NOT_READY)}, seq=1)

    async def states() -> dict[State, int]:
        return (await h.bundles(nc))["web"].states

    async def not_ready() -> bool:
        return await states() == {State.NOT_READY: 1}

    await eventually(not_ready)
    ingest = control_plane.ingest
    assert ingest is not None
    await ingest.stop_status(reg.shard)  # from here this replica misses the shard's reports
    await h.report(nc, reg, {"web": (deployment, State.READY)}, seq=2)
    await h.heartbeat(nc, reg, status_seq=1)  # announces what was taken: nothing to do
    await asyncio.sleep(0.2)
    assert await ingest.recover_unreported(time.time() + 60) == 0
    assert await states() == {State.NOT_READY: 1}

    await h.heartbeat(nc, reg, status_seq=2)
    await asyncio.sleep(0.2)
    assert await ingest.recover_unreported(time.time(), grace=60) == 0  # may still arrive
    assert await ingest.recover_unreported(time.time() + 60) == 1
    assert await states() == {State.READY: 1}
    assert (await h.stats(nc))["status_recovered"] == 1
    # Handed out once per announced report: the same heartbeat again asks for nothing.
    await h.heartbeat(nc, reg, status_seq=2)
    await asyncio.sleep(0.2)
    assert await ingest.recover_unreported(time.time() + 60) == 0


async def test_a_status_consumer_lost_on_the_server_is_made_again(
    control_plane: ControlPlane, nc: Client
) -> None:
    token = await h.create_token(nc)
    reg = await h.register(nc, token, "shop-1", {"env": "prod"})
    assert isinstance(reg, RegisterReply)
    applied = await h.apply_bundle(nc, "web", h.resources("1"))
    deployment = applied.deployment_ids[0]

    async def states() -> dict[State, int]:
        return (await h.bundles(nc))["web"].states

    async def not_ready() -> bool:
        return await states() == {State.NOT_READY: 1}

    async def ready() -> bool:
        return await states() == {State.READY: 1}

    await h.report(nc, reg, {"web": (deployment, State.NOT_READY)}, seq=1)
    await eventually(not_ready)
    js = nc.jetstream()
    for consumer in await js.consumers_info(subjects.STATUS_STREAM):
        await js.delete_consumer(subjects.STATUS_STREAM, consumer.name)
    await h.report(nc, reg, {"web": (deployment, State.READY)}, seq=2)
    await eventually(ready, timeout=15)
    assert (await h.stats(nc)).get("status_consumer_restarts", 0) >= 1


async def test_a_registration_into_a_class_being_made_is_answered_once_its_state_is_stored(
    control_plane: ControlPlane, nc: Client
) -> None:
    token = await h.create_token(nc)
    applied = await h.apply_bundle(nc, "web", h.resources("1"), targets=["env=prod"])
    assert isinstance(applied, admin.BundleApplied)
    publisher = control_plane.fleet.publisher
    gate = asyncio.Event()
    sync = publisher.sync

    async def slow_sync(*args: object, **kwargs: object) -> int:
        await gate.wait()  # the class's message is on its way, not stored yet
        return await sync(*args, **kwargs)  # type: ignore[arg-type]

    publisher.sync = slow_sync  # type: ignore[method-assign]
    first = asyncio.create_task(h.register(nc, token, "prod-1", {"env": "prod"}))
    await eventually(lambda: _true(control_plane.fleet.registry.get_by_name("prod-1")))
    second = asyncio.create_task(h.register(nc, token, "prod-2", {"env": "prod"}))
    await asyncio.sleep(0.3)
    # prod-2 would subscribe and read its class now and could find nothing there.
    assert not first.done() and not second.done()
    gate.set()
    reply = await second
    assert isinstance(reply, RegisterReply) and isinstance(await first, RegisterReply)
    listed = await h.clusters(nc)
    stored = await nc.jetstream().get_last_msg(
        subjects.DESIRED_STREAM, subjects.desired(listed["prod-2"].class_id, "web")
    )
    message = codec.decode(stored.data or b"", DesiredBundle)
    assert manifest_of(message.deployment_id) == applied.manifest_id


async def _true(value: object) -> bool:
    return bool(value)


async def test_a_lone_replica_answers_status_reads_from_its_own_counts(
    control_plane: ControlPlane, nc: Client
) -> None:
    # Its own part never goes round the bus: under load, that way back waits
    # behind every report still to be ingested, and the answer came back empty.
    token = await h.create_token(nc)
    assert isinstance(await h.register(nc, token, "prod-1", {"env": "prod"}), RegisterReply)
    await h.apply_bundle(nc, "web", h.resources("1"), targets=["env=prod"])
    asked: list[bytes] = []

    async def collect(msg: Msg) -> None:
        asked.append(msg.data)

    sub = await nc.subscribe(subjects.INTERNAL_SUMMARY, cb=collect)
    try:
        assert (await h.bundles(nc))["web"].states == {State.WAIT_APPLIED: 1}
        assert set(await h.clusters(nc)) == {"prod-1"}
        await nc.flush()
        await asyncio.sleep(0.1)
    finally:
        await sub.unsubscribe()
    assert asked == []
