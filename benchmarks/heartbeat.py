"""Scenario ``heartbeat``: steady state, no changes; heartbeat ingest rate and its CPU cost.

N simulated clusters beat every ``--heartbeat-interval`` seconds (0.5 s by
default, ten times faster than the agent's default, so a few thousand
clusters offer the load of tens of thousands). After the fleet has converged
on one bundle (so no status reports are due and every message is a bare
heartbeat), the control plane's ``heartbeat_ingested`` counter and its CPU
seconds (``/proc/<pid>/stat``) are read at both ends of a window:

* ``heartbeats_per_second``: ingested by the control plane over the window;
* ``offered_per_second``: sent by the agents over the same window (their
  ``heartbeats_sent`` counters). When the two differ the control plane is
  behind; when the offered rate is below N / interval, the simulated fleet
  (one Python process on the same cores) is the limit, not the control plane;
* ``cp_cpu_seconds`` and ``cp_cpu_per_1000_heartbeats`` over the window, and
  the harness's own CPU seconds, so the reader sees who used the cores;
* ``heartbeat_bytes``: mean payload size of heartbeats sampled on the bus.

With ``--processes P`` the fleet runs in P worker processes
(:mod:`benchmarks.worker`), which report their agents' ``heartbeats_sent``
when asked; ``harness_cpu_seconds`` is then the workers' CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

from benchmarks import harness as h
from benchmarks import multiproc
from benchmarks.rollout import connections_for
from edgeagent.settings import AgentSettings
from edgeagent.simfleet import SimulatedFleet
from protocol import subjects

BUNDLE = "base"
SAMPLE_SECONDS = 1.0
WARMUP_SECONDS = 2.0
PER_THOUSAND = 1000


async def run(
    *,
    clusters: int,
    classes: int,
    timeout: float,
    window: float,
    interval: float,
    processes: int = 1,
    driven: bool = False,
) -> dict[str, Any]:
    settings = AgentSettings(
        status_interval=0.25,
        heartbeat_interval=interval,
        sim_readiness_delay=0.05,
        observe_interval_not_ready=0.1,
        resync_interval=3600.0,
    )
    result: dict[str, Any] = {
        "scenario": "heartbeat",
        "clusters": clusters,
        "classes": classes,
        "heartbeat_interval": interval,
        "window_seconds": window,
        "processes": processes,
        "driven_heartbeats": driven,
        "errors": [],
    }
    async with h.Bench() as bench, bench.client() as client:
        assert bench.cp is not None
        token = await bench.token(client)
        await h.apply_bundle(client, BUNDLE, "0", selector=h.class_selector(classes))
        if processes > 1:
            await _run_workers(bench, client, token, result, timeout=timeout)
            return _summary(result)
        connections = connections_for(clusters)
        result["connections"] = connections
        fleet = SimulatedFleet(
            count=clusters,
            token=token,
            settings=settings,
            url=bench.url,
            connections=connections,
            labels_for=h.class_labels(classes),
            driven_heartbeats=driven,
        )
        h.say(f"registering {clusters} clusters")
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await fleet.start()
            result["registration_seconds"] = round(time.monotonic() - started, 3)
            ready, _ = await h.wait_ready(client, BUNDLE, clusters, timeout=timeout, label=BUNDLE)
            result["ready"] = ready
            await asyncio.sleep(WARMUP_SECONDS)
            driver = asyncio.create_task(fleet.drive_heartbeats()) if driven else None
            result["heartbeat_bytes"] = await _sample_size(client.nc)

            async def sent() -> int:
                return sum(a.reporter.heartbeats_sent for a in fleet.agents)

            result.update(await _measure(bench.cp, client, sent, [os.getpid()], window=window))
            if driver is not None:
                driver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await driver
        finally:
            await fleet.stop()
    return _summary(result)


async def _run_workers(
    bench: h.Bench, client: Any, token: str, result: dict[str, Any], *, timeout: float
) -> None:
    assert bench.cp is not None
    clusters, processes = result["clusters"], result["processes"]
    h.say(f"registering {clusters} clusters over {processes} worker processes")
    started = time.monotonic()
    workers = await multiproc.start_workers(
        bench.url,
        token,
        clusters=clusters,
        classes=result["classes"],
        processes=processes,
        heartbeat_interval=result["heartbeat_interval"],
        driven_heartbeats=result["driven_heartbeats"],
    )
    try:
        async with asyncio.timeout(timeout):
            result["registration_failed"] = await multiproc.registered(workers)
        result["registration_seconds"] = round(time.monotonic() - started, 3)
        ready, _ = await h.wait_ready(client, BUNDLE, clusters, timeout=timeout, label=BUNDLE)
        result["ready"] = ready
        await asyncio.sleep(WARMUP_SECONDS)
        result["heartbeat_bytes"] = await _sample_size(client.nc)

        async def sent() -> int:
            async with asyncio.timeout(timeout):
                return await multiproc.heartbeats_sent(workers)

        pids = [w.pid for w in workers]
        result.update(await _measure(bench.cp, client, sent, pids, window=result["window_seconds"]))
    finally:
        await multiproc.stop_workers(workers)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    expected = result["clusters"] / result["heartbeat_interval"]
    result["expected_per_second"] = round(expected, 1)
    h.say(
        f"heartbeat: {result.get('heartbeats_per_second')} ingested/s "
        f"(offered {result.get('offered_per_second')}/s, nominal {expected:.0f}/s), "
        f"control plane CPU {result.get('cp_cpu_seconds')} s over {result['window_seconds']} s"
    )
    return result


async def _sample_size(nc: Any) -> int:
    sizes: list[int] = []

    async def collect(msg: Msg) -> None:
        sizes.append(len(msg.data))

    sub = await nc.subscribe(subjects.HEARTBEAT_ALL, cb=collect)
    await asyncio.sleep(SAMPLE_SECONDS)
    await sub.unsubscribe()
    return sum(sizes) // len(sizes) if sizes else 0


async def _measure(
    cp: h.ControlPlaneProcess,
    client: Any,
    sent: Callable[[], Awaitable[int]],
    fleet_pids: list[int],
    *,
    window: float,
) -> dict[str, Any]:
    """Counters at both ends of the window; ``fleet_pids`` are the processes running agents."""

    def fleet_cpu() -> float:
        return sum(h.proc_cpu_seconds(pid) for pid in fleet_pids)

    before = await h.stats(client)
    cpu_before, own_before, sent_before = cp.cpu_seconds(), fleet_cpu(), await sent()
    started = time.monotonic()
    h.say(f"measuring heartbeat ingest over {window} s")
    await asyncio.sleep(window)
    after = await h.stats(client)
    cpu, own = cp.cpu_seconds() - cpu_before, fleet_cpu() - own_before
    offered = await sent() - sent_before
    elapsed = time.monotonic() - started
    ingested = after.get("heartbeat_ingested", 0) - before.get("heartbeat_ingested", 0)
    return {
        "heartbeats_ingested": ingested,
        "heartbeats_sent": offered,
        "heartbeats_per_second": round(ingested / elapsed, 1),
        "offered_per_second": round(offered / elapsed, 1),
        "heartbeat_dropped": after.get("heartbeat_dropped", 0) - before.get("heartbeat_dropped", 0),
        "cp_cpu_seconds": round(cpu, 3),
        "cp_cpu_per_1000_heartbeats": round(cpu / ingested * PER_THOUSAND, 4) if ingested else None,
        "harness_cpu_seconds": round(own, 3),
        "cp_rss_bytes": cp.rss_bytes(),
    }
