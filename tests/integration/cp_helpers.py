"""Helpers for control-plane integration tests: play an agent or the CLI over raw NATS."""

from __future__ import annotations

import time
from collections.abc import Sequence

from nats.aio.client import Client

from protocol import admin, codec, ids, subjects
from protocol.messages import (
    BundleStatus,
    ErrorReply,
    Heartbeat,
    RegisterReply,
    RegisterRequest,
    StatusReport,
    WireMessage,
)
from protocol.models import BundleResource, BundleSpec, BundleTarget
from protocol.selectors import LabelSelector, parse_selector
from protocol.states import State

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
data:
  value: "{value}"
"""


async def request(nc: Client, subject: str, message: WireMessage) -> WireMessage:
    reply = await nc.request(subject, codec.encode(message), timeout=10)
    return codec.decode_any(reply.data)


async def admin_call(nc: Client, message: WireMessage) -> WireMessage:
    return await request(nc, subjects.admin(getattr(message, "OP", "")), message)


async def create_token(nc: Client, ttl: float = 3600) -> str:
    reply = await admin_call(nc, admin.TokenCreate(ttl_seconds=ttl))
    assert isinstance(reply, admin.TokenCreated), reply
    return reply.token


async def register(
    nc: Client, token: str, name: str, labels: dict[str, str] | None = None
) -> RegisterReply | ErrorReply:
    reply = await request(
        nc, subjects.REGISTER, RegisterRequest(token=token, name=name, labels=labels or {})
    )
    assert isinstance(reply, RegisterReply | ErrorReply), reply
    return reply


def resources(
    value: str = "1", files: Sequence[tuple[str, str]] | None = None
) -> list[BundleResource]:
    if files is not None:
        return [BundleResource(name=n, content=c) for n, c in files]
    return [BundleResource(name="cm.yaml", content=CONFIGMAP.format(name="demo", value=value))]


async def apply_bundle(
    nc: Client,
    name: str,
    res: list[BundleResource],
    targets: Sequence[str] | None = None,
) -> WireMessage:
    blob = codec.encode_resources(res)
    manifest = ids.manifest_id_of_blob(blob)
    store = await nc.jetstream().object_store(subjects.BLOB_BUCKET)
    await store.put(manifest, blob)
    if targets is None:
        target_list = (BundleTarget(cluster_selector=LabelSelector()),)
    else:
        target_list = tuple(BundleTarget(cluster_selector=parse_selector(t)) for t in targets)
    spec = BundleSpec(name=name, targets=target_list)
    return await admin_call(nc, admin.BundleApply(spec=spec, manifest_id=manifest))


async def report(
    nc: Client,
    reg: RegisterReply,
    statuses: dict[str, tuple[str, State]],
    seq: int = 1,
    *,
    sent_at_offset: float = 0.0,
) -> None:
    message = StatusReport(
        seq=seq,
        sent_at=time.time() + sent_at_offset,
        bundles=tuple(
            BundleStatus(bundle=b, deployment_id=d, state=s) for b, (d, s) in statuses.items()
        ),
    )
    js = nc.jetstream()
    await js.publish(subjects.status(reg.shard, reg.cluster_id), codec.encode(message))


async def heartbeat(nc: Client, reg: RegisterReply, seq: int = 1, *, status_seq: int = 0) -> None:
    await nc.publish(
        subjects.heartbeat(reg.shard, reg.cluster_id),
        codec.encode(Heartbeat(seq=seq, status_seq=status_seq)),
    )


async def bundles(nc: Client) -> dict[str, admin.BundleSummary]:
    reply = await admin_call(nc, admin.BundleList())
    assert isinstance(reply, admin.BundleListReply), reply
    return {b.name: b for b in reply.bundles}


async def clusters(nc: Client) -> dict[str, admin.ClusterSummary]:
    reply = await admin_call(nc, admin.ClusterList())
    assert isinstance(reply, admin.ClusterListReply), reply
    return {c.name: c for c in reply.clusters}


async def stats(nc: Client) -> dict[str, int]:
    reply = await admin_call(nc, admin.Stats())
    assert isinstance(reply, admin.StatsReply), reply
    return reply.counters
