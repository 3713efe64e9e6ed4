"""Scenario ``rollout``: N clusters in K label classes, one bundle change, time to all Ready.

Steps, each with its own figure in the result:

1. A nats-server and the control plane (a separate ``shoal server`` process,
   so its RSS and CPU are its own) start in a temporary directory.
2. A first bundle ``base`` targets ``class in (c0,...,c{K-1})``. Applied before
   any cluster exists, it makes ``class`` part of the schema so the K values
   are K label classes; the high-cardinality ``shop`` label is read by no
   selector and splits nothing.
3. The simulated fleet (real agents, simulated backend, a few shared
   connections, in this process) registers: ``registration_seconds``. The
   control plane's RSS is read before and after: ``cp_rss_bytes_per_cluster``.
   The fleet converges on ``base`` (``baseline_seconds``) before the change.
4. The change: bundle ``web`` targeting every cluster is applied (blob upload,
   then BundleApply, as ``shoal apply`` does). The clock starts at the
   BundleApply request and stops when the control plane's BundleList shows
   ``web`` Ready on all N: ``seconds_to_all_ready``. ``cp_publishes`` is the
   delta of the ``desired_publishes`` counter: ``web`` changes no selector key,
   so the schema is not republished and it is exactly one per class.
5. Ablation, the way Fleet does it (one BundleDeployment per cluster): the
   harness plays a per-cluster control plane (:mod:`benchmarks.percluster`,
   its own process, as the control plane is) that publishes one DesiredBundle
   per cluster on ``shoal.v1.cluster.<id>.desired.web`` (JetStream, pipelined
   with ``publish_async``: the best case for that design) for a new
   deployment; the clock starts when it is connected and told to go. Agents
   honour per-cluster messages over the class message. The clock stops when
   every cluster's status report on the bus says that deployment is Ready
   (the same reports the control plane ingests, read by a tap, because the
   control plane's BundleList counts the class deployment).
6. The fleet stops and the raw NATS reference runs (:mod:`benchmarks.rawnats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

from benchmarks import harness as h
from benchmarks.rawnats import RawNatsError, raw_nats_seconds
from benchmarks.taps import (
    DesiredTap,
    StatusTap,
    StoredReports,
    class_members,
    stuck_agents,
)
from edgeagent.settings import AgentSettings
from edgeagent.simfleet import SimulatedFleet
from edgeagent.store import MemoryBlobCache
from protocol import codec, ids
from protocol.messages import DesiredBundle
from protocol.models import DeploymentOptions
from shoal_cli.client import AdminClient

BASE_BUNDLE = "base"
ROLLOUT_BUNDLE = "web"
AGENTS_PER_CONNECTION = 1000
MAX_CONNECTIONS = 8
RSS_SETTLE_SECONDS = 1.0
# Agent timings for the benchmark: the simulated apply is ready almost at once
# and reported within a quarter second, so the figures measure shoal, not sleeps.
# Each agent's recheck of its desired state comes 1-2 s after it registered, so
# the registration's reads are over before the timed rollout starts. A Ready
# bundle's periodic look for drift is work each real cluster does on its own CPU
# and sends nothing while nothing drifted; at the default 30 s, 100,000 simulated
# clusters would make 3,300 such looks a second on this machine's two cores,
# taken from the rollout being measured. Here it is every 10 minutes.
MISSED_HEARTBEATS = 4  # the control plane's default timeout over the agents' default interval
FLEET_SETTINGS = AgentSettings(
    status_interval=0.25,
    heartbeat_interval=5.0,
    sim_readiness_delay=0.05,
    observe_interval=600.0,
    observe_interval_not_ready=0.1,
    resync_interval=3600.0,
    snapshot_recheck=1.0,
)


class CountingBlobCache(MemoryBlobCache):
    """The fleet's shared blob cache, counting what was downloaded into it."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0
        self.bytes = 0

    def put(self, manifest_id: str, blob: bytes) -> None:
        self.puts += 1
        self.bytes += len(blob)
        super().put(manifest_id, blob)


def connections_for(clusters: int) -> int:
    return max(1, min(MAX_CONNECTIONS, clusters // AGENTS_PER_CONNECTION + 1))


def fleet_settings(heartbeat_interval: float | None) -> AgentSettings:
    """The rollout's agent settings, with another heartbeat interval if one is given."""
    if heartbeat_interval is None:
        return FLEET_SETTINGS
    return FLEET_SETTINGS.model_copy(update={"heartbeat_interval": heartbeat_interval})


def control_plane_env(heartbeat_interval: float | None) -> dict[str, str]:
    """The control plane's environment: Offline after four missed heartbeats, as by default.

    Its default (20 s) is four of the agents' default 5 s: agents that beat
    less often would otherwise go Offline between two of their heartbeats.
    """
    if heartbeat_interval is None:
        return {}
    return {"SHOAL_HEARTBEAT_TIMEOUT": f"{MISSED_HEARTBEATS * heartbeat_interval:g}"}


async def run(
    *, clusters: int, classes: int, timeout: float, heartbeat_interval: float | None = None
) -> dict[str, Any]:
    settings = fleet_settings(heartbeat_interval)
    result: dict[str, Any] = {
        "scenario": "rollout",
        "clusters": clusters,
        "classes": classes,
        "ready": 0,
        "errors": [],
        "settings": settings.model_dump(
            include={
                "status_interval",
                "heartbeat_interval",
                "sim_readiness_delay",
                "observe_interval_not_ready",
            }
        ),
    }
    env = control_plane_env(heartbeat_interval)
    async with h.Bench(cp_env=env) as bench, bench.client() as client:
        assert bench.cp is not None
        token = await bench.token(client)
        await h.apply_bundle(client, BASE_BUNDLE, "0", selector=h.class_selector(classes))
        connections = connections_for(clusters)
        result["connections"] = connections
        fleet = SimulatedFleet(
            count=clusters,
            token=token,
            settings=settings,
            url=bench.url,
            connections=connections,
            labels_for=h.class_labels(classes),
        )
        blobs = CountingBlobCache()
        fleet.blob_cache = blobs
        await asyncio.sleep(h.CP_POLL)
        rss_before = bench.cp.rss_bytes()
        h.say(f"registering {clusters} clusters in {classes} classes on {connections} connections")
        cp_cpu, own_cpu = bench.cp.cpu_seconds(), h.proc_cpu_seconds(os.getpid())
        started = time.monotonic()
        try:
            try:
                async with asyncio.timeout(timeout):
                    await fleet.start()
            except TimeoutError:
                result["errors"].append(registration_timed_out(clusters, timeout))
                return result
            result["registration_seconds"] = round(time.monotonic() - started, 3)
            result["registration_cp_cpu_seconds"] = round(bench.cp.cpu_seconds() - cp_cpu, 2)
            result["registration_harness_cpu_seconds"] = round(
                h.proc_cpu_seconds(os.getpid()) - own_cpu, 2
            )
            result["registration_failed"] = len(fleet.failed)
            h.say(f"registered in {result['registration_seconds']} s ({len(fleet.failed)} failed)")
            ready, seconds = await h.wait_ready(
                client, BASE_BUNDLE, clusters, timeout=timeout, label=BASE_BUNDLE
            )
            result["baseline_ready"] = ready
            if ready < clusters:
                result["errors"].append(
                    f"first bundle: only {ready} of {clusters} Ready within {timeout} s"
                )
                result["stuck_agents"] = stuck_agents(fleet.agents)
            result["baseline_seconds"] = round(seconds, 3)
            await asyncio.sleep(RSS_SETTLE_SECONDS)
            rss_after = bench.cp.rss_bytes()
            result["cp_rss_bytes_before"] = rss_before
            result["cp_rss_bytes_after"] = rss_after
            result["cp_rss_bytes_per_cluster"] = round((rss_after - rss_before) / clusters, 1)
            result["cp_classes"] = (await h.stats(client))["classes"]
            await _rollout(client, bench, fleet, blobs, result, timeout=timeout)
            await _ablation(client, fleet, result, timeout=timeout)
        finally:
            await fleet.stop()
        await raw_reference(bench.url, result, timeout=timeout)
    return result


async def _rollout(
    client: AdminClient,
    bench: h.Bench,
    fleet: SimulatedFleet,
    blobs: CountingBlobCache,
    result: dict[str, Any],
    *,
    timeout: float,
) -> None:
    clusters = result["clusters"]
    manifest, blob = h.bundle_blob(ROLLOUT_BUNDLE, "1")
    desired_tap = DesiredTap(client.nc)
    stored = StoredReports(
        client.nc, ROLLOUT_BUNDLE, ids.deployment_id(manifest, DeploymentOptions()), clusters
    )
    await desired_tap.start()
    try:
        await client.upload_blob(manifest, blob)
        await stored.mark()
        assert bench.cp is not None
        cp = bench.cp
        before = await h.stats(client)
        cpu_before, own_before = cp.cpu_seconds(), h.proc_cpu_seconds(os.getpid())
        nats_before = bench.nats_cpu_seconds()
        blob_puts, blob_bytes = blobs.puts, blobs.bytes
        h.say(f"rollout: applying {ROLLOUT_BUNDLE} to {clusters} clusters")
        started, started_wall = time.monotonic(), time.time()
        applied = await h.apply_bundle(client, ROLLOUT_BUNDLE, "1")
        result["apply_seconds"] = round(time.monotonic() - started, 3)
        ready = await rollout_ready(client, clusters, result, timeout=timeout)
        seconds = time.monotonic() - started
        result["cp_cpu_seconds"] = round(cp.cpu_seconds() - cpu_before, 3)
        result["harness_cpu_seconds"] = round(h.proc_cpu_seconds(os.getpid()) - own_before, 3)
        result["nats_cpu_seconds"] = round(bench.nats_cpu_seconds() - nats_before, 3)
        after = await h.stats(client)
    finally:
        await desired_tap.stop()
    result["ready"] = ready
    result["seconds_to_all_ready"] = round(seconds, 3)
    result["deployment_id"] = ", ".join(applied.deployment_ids)
    counted(result, before, after)
    result.update(desired_tap.figures(class_members(fleet.agents), clusters=clusters))
    result["blob_downloads"] = blobs.puts - blob_puts
    result["blob_bytes"] = blobs.bytes - blob_bytes
    result.update(await stored.figures(started_wall))
    said(result, ready, clusters, timeout=timeout)


async def rollout_ready(
    client: AdminClient, clusters: int, result: dict[str, Any], *, timeout: float
) -> int:
    """Wait for the control plane to show the rollout Ready on ``clusters``; how many it showed.

    What it answered in each second goes into ``result`` as ``ready_by_second``.
    """
    by_second: list[int] = []
    ready, _ = await h.wait_ready(
        client, ROLLOUT_BUNDLE, clusters, timeout=timeout, label=ROLLOUT_BUNDLE, by_second=by_second
    )
    result["ready_by_second"] = by_second
    return ready


def registration_timed_out(clusters: int, timeout: float) -> str:
    """The error of a fleet that did not register within ``--timeout``."""
    return (
        f"registration: the {clusters} clusters did not all register within {timeout:g} s "
        "(--timeout bounds registration too; at 100,000 it takes several minutes here)"
    )


def counted(result: dict[str, Any], before: dict[str, int], after: dict[str, int]) -> None:
    """The control plane's publishes, ingested reports and heartbeats between two ``stats``."""
    result["cp_publishes"] = after["desired_publishes"] - before["desired_publishes"]
    for kind in ("status", "heartbeat"):
        key = f"{kind}_ingested"
        result[f"cp_{key}"] = after.get(key, 0) - before.get(key, 0)


def said(result: dict[str, Any], ready: int, clusters: int, *, timeout: float) -> None:
    """Say how the rollout went; a rollout that did not converge is an error."""
    h.say(
        f"rollout: {ready}/{clusters} Ready in {result['seconds_to_all_ready']:.2f} s, "
        f"{result['cp_publishes']} control-plane publishes, "
        f"{result['bytes_per_cluster']} desired bytes per cluster"
    )
    if ready < clusters:
        result["errors"].append(f"only {ready} of {clusters} Ready within {timeout} s")


async def _ablation(
    client: AdminClient, fleet: SimulatedFleet, result: dict[str, Any], *, timeout: float
) -> None:
    """One desired-state message per cluster, from a per-cluster publisher process."""
    agents = [a for a in fleet.agents if a.identity is not None]
    manifest, blob = h.bundle_blob(ROLLOUT_BUNDLE, "ablation")
    await client.upload_blob(manifest, blob)
    deployment = ids.deployment_id(manifest, DeploymentOptions())
    spec = {
        "url": client.url,
        "bundle": ROLLOUT_BUNDLE,
        "deployment_id": deployment,
        "clusters": [a.identity.cluster_id for a in agents if a.identity is not None],
    }
    tap = StatusTap(client.nc)
    tap.watch(ROLLOUT_BUNDLE, deployment, len(agents))
    await tap.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.percluster",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    h.say(f"ablation: one desired-state message per cluster to {len(agents)} clusters")
    seconds = 0.0
    try:
        proc.stdin.write((json.dumps(spec) + "\n").encode())
        await proc.stdin.drain()
        async with asyncio.timeout(timeout):
            await proc.stdout.readline()  # "ready": connected, imports done
        started = time.monotonic()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        try:
            async with asyncio.timeout(timeout):
                line = await proc.stdout.readline()
                result["ablation_publish_seconds"] = round(json.loads(line)["seconds"], 3)
                await tap.done.wait()
        except (TimeoutError, ValueError, KeyError):
            result["errors"].append(
                f"ablation: only {len(tap.ready)} of {len(agents)} Ready within {timeout} s"
            )
        seconds = (tap.done_at or time.monotonic()) - started
    finally:
        await tap.stop()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
    result["ablation_publishes"] = len(agents)
    result["ablation_ready"] = len(tap.ready)
    result["ablation_per_cluster_seconds"] = round(seconds, 3)
    result["ablation_bytes_per_cluster"] = len(
        codec.encode(
            DesiredBundle(bundle=ROLLOUT_BUNDLE, rev=time.time_ns(), deployment_id=deployment)
        )
    )
    result["ablation_readiness_view"] = "status reports on the bus"
    h.say(
        f"ablation: {len(tap.ready)}/{len(agents)} Ready in {seconds:.2f} s "
        f"with {len(agents)} publishes"
    )


async def raw_reference(url: str, result: dict[str, Any], *, timeout: float) -> None:
    h.say("raw NATS reference")
    try:
        seconds = await raw_nats_seconds(
            url,
            clusters=result["clusters"],
            classes=result["classes"],
            connections=result["connections"],
            desired_size=result.get("desired_message_bytes", 0),
            status_size=result.get("status_message_bytes", 0),
            status_count=result.get("status_messages", 0),
            timeout=timeout,
        )
    except RawNatsError as exc:
        result["errors"].append(f"raw NATS reference not measured: {exc}")
        h.say(f"raw NATS: not measured: {exc}")
        return
    result["raw_nats_seconds"] = round(seconds, 4)
    if result.get("seconds_to_all_ready"):
        result["ratio_to_raw"] = round(result["seconds_to_all_ready"] / seconds, 1)
    h.say(f"raw NATS: {seconds:.3f} s")
