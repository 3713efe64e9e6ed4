"""``registry``: the control plane's memory per registered cluster, without agents.

The rollout scenarios measure memory per cluster too, but their fleet is real
agents, and a simulated agent costs its process about 40-56 KB: a million of
them do not fit this machine. The control plane's own state per cluster does
not depend on who sends the messages, so here the harness plays the clusters'
side of the protocol itself, each cluster with its own messages: a
``RegisterRequest`` per cluster (the same request an agent sends, answered
the same way: token check, record in the cluster bucket, shard and secret),
then one ``StatusReport`` per cluster on its own status subject saying the
first bundle is Ready, as the agent would once it applied it. No heartbeats
follow, so the control plane marks the clusters Offline after its heartbeat
timeout; an Offline cluster keeps its record and its reported state.

Figures: ``registration_seconds`` and ``registrations_per_second``,
``cp_rss_bytes_per_cluster`` (RSS after every report was ingested minus RSS
before the first registration, divided by N), the control plane's CPU
seconds for both phases, and ``states``: the first bundle's summary once
every report was ingested (clusters already marked Offline count there, not
as Ready; their reported state is kept all the same).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from benchmarks import harness as h
from benchmarks.rollout import BASE_BUNDLE, RSS_SETTLE_SECONDS
from protocol import admin, codec, ids, subjects
from protocol.messages import BundleStatus, RegisterReply, RegisterRequest, StatusReport
from protocol.models import DeploymentOptions
from protocol.states import State

CONNECTIONS = 4
IN_FLIGHT = 256  # registration requests outstanding at once
REGISTER_TIMEOUT = 30.0
REGISTER_ATTEMPTS = 3
PUBLISH_WINDOW = 500  # status publishes awaiting their acks at once
PROGRESS_EVERY = 10.0


async def _register_all(
    clients: list[Client],
    token: str,
    clusters: int,
    labels_for: Callable[[int], dict[str, str]],
    failed: list[str],
) -> list[RegisterReply | None]:
    replies: list[RegisterReply | None] = [None] * clusters
    pending = iter(range(clusters))
    done = 0
    last_say = time.monotonic()

    async def one(index: int) -> RegisterReply | None:
        request = RegisterRequest(
            token=token, name=f"reg-{index:07d}", labels=labels_for(index), annotations={}
        )
        client = clients[index % len(clients)]
        for attempt in range(1, REGISTER_ATTEMPTS + 1):
            try:
                msg = await client.request(
                    subjects.REGISTER, codec.encode(request), timeout=REGISTER_TIMEOUT
                )
            except (nats.errors.TimeoutError, TimeoutError):
                if attempt == REGISTER_ATTEMPTS:
                    failed.append(f"{request.name}: no reply in {REGISTER_TIMEOUT} s")
                continue
            reply = codec.decode_any(msg.data)
            if isinstance(reply, RegisterReply):
                return reply
            failed.append(f"{request.name}: {reply!r}")
            return None
        return None

    async def worker() -> None:
        nonlocal done, last_say
        for index in pending:
            replies[index] = await one(index)
            done += 1
            if time.monotonic() - last_say >= PROGRESS_EVERY:
                last_say = time.monotonic()
                h.say(f"registered {done}/{clusters}")

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return replies


async def _report_all(
    js: JetStreamContext, replies: list[RegisterReply | None], deployment: str, failed: list[str]
) -> int:
    """One Ready report per registered cluster on its own subject; how many were stored."""
    pending = iter(r for r in replies if r is not None)
    stored = 0
    report = codec.encode(
        StatusReport(
            seq=1,
            sent_at=time.time(),
            bundles=(
                BundleStatus(bundle=BASE_BUNDLE, deployment_id=deployment, state=State.READY),
            ),
        )
    )

    async def worker() -> None:
        nonlocal stored
        for reply in pending:
            subject = subjects.status(reply.shard, reply.cluster_id)
            for attempt in range(1, REGISTER_ATTEMPTS + 1):
                try:
                    await js.publish(subject, report, timeout=REGISTER_TIMEOUT)
                except (nats.errors.TimeoutError, TimeoutError):
                    if attempt == REGISTER_ATTEMPTS:
                        failed.append(f"{subject}: no ack in {REGISTER_TIMEOUT} s")
                    continue
                stored += 1
                break

    await asyncio.gather(*(worker() for _ in range(PUBLISH_WINDOW)))
    return stored


async def run(*, clusters: int, classes: int, timeout: float) -> dict[str, Any]:
    result: dict[str, Any] = {
        "scenario": "registry",
        "clusters": clusters,
        "classes": classes,
        "ready": 0,
        "errors": [],
    }
    async with h.Bench() as bench, bench.client() as client:
        assert bench.cp is not None
        token = await bench.token(client)
        await h.apply_bundle(client, BASE_BUNDLE, "0", selector=h.class_selector(classes))
        manifest, _ = h.bundle_blob(BASE_BUNDLE, "0")
        deployment = ids.deployment_id(manifest, DeploymentOptions())
        await asyncio.sleep(h.CP_POLL)
        rss_before = bench.cp.rss_bytes()
        clients = [await nats.connect(bench.url) for _ in range(CONNECTIONS)]
        try:
            failed: list[str] = []
            h.say(f"registering {clusters} clusters in {classes} classes")
            cpu = bench.cp.cpu_seconds()
            started = time.monotonic()
            async with asyncio.timeout(timeout):
                replies = await _register_all(
                    clients, token, clusters, h.class_labels(classes), failed
                )
            seconds = time.monotonic() - started
            result["registration_seconds"] = round(seconds, 3)
            result["registrations_per_second"] = round(clusters / seconds)
            result["registration_cp_cpu_seconds"] = round(bench.cp.cpu_seconds() - cpu, 2)
            result["registration_failed"] = len(failed)
            result["errors"].extend(failed[:10])
            h.say(f"registered in {seconds:.1f} s ({len(failed)} failed); reporting")
            cpu = bench.cp.cpu_seconds()
            started = time.monotonic()
            before = (await h.stats(client)).get("status_ingested", 0)
            async with asyncio.timeout(timeout):
                sent = await _report_all(clients[0].jetstream(), replies, deployment, failed)
            report_failed = failed[result["registration_failed"] :]
            result["report_failed"] = len(report_failed)
            result["errors"].extend(report_failed[:10])

            async def ingested() -> bool:
                return (await h.stats(client)).get("status_ingested", 0) - before >= sent

            if not await h.wait_for(ingested, timeout=timeout):
                result["errors"].append(f"not all {sent} reports ingested within {timeout} s")
            result["report_seconds"] = round(time.monotonic() - started, 3)
            result["report_cp_cpu_seconds"] = round(bench.cp.cpu_seconds() - cpu, 2)
        finally:
            for c in clients:
                await c.close()
        await asyncio.sleep(RSS_SETTLE_SECONDS)
        rss_after = bench.cp.rss_bytes()
        result["cp_rss_bytes_before"] = rss_before
        result["cp_rss_bytes_after"] = rss_after
        result["cp_rss_bytes_per_cluster"] = round((rss_after - rss_before) / clusters, 1)
        reply = await client.admin(admin.BundleList(), admin.BundleListReply)
        states = next((b.states for b in reply.bundles if b.name == BASE_BUNDLE), {})
        result["states"] = {str(state): n for state, n in states.items()}
        result["ready"] = states.get(State.READY, 0)
    h.say(
        f"registry: {clusters} clusters, {result['cp_rss_bytes_per_cluster']} bytes of "
        f"control-plane memory per cluster"
    )
    return result
