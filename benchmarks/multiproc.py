"""``rollout --processes P``: the rollout scenario with the fleet spread over P processes.

One Python process saturates at some tens of thousands of simulated clusters,
so here P worker processes (:mod:`benchmarks.worker`) each run a slice of the
fleet while the harness, idle otherwise, measures what the single-process
rollout (:mod:`benchmarks.rollout`) does, but the ablation:

* registration time (until every worker reports its slice started),
  convergence on a first bundle and control-plane memory per cluster;
* the rollout of a second bundle until the control plane shows all N Ready,
  with its publishes and CPU;
* the status reports, read back from the status stream afterwards
  (``StoredReports``: when every cluster had reported the new deployment
  Ready, how many reports and their size), and on the harness's own
  connection the desired-state messages (``DesiredTap``). The harness has
  no agent objects to charge a class message to, so it asks each worker over
  the stdin/stdout line protocol how many of its agents subscribe to each
  class's subject (the same count ``taps.class_members`` takes of a fleet
  in this process) and charges the sum; each worker also counts the blobs its
  fleet downloaded (one download per fleet connection, as in one process);
* after the workers stopped, the raw NATS reference
  (:mod:`benchmarks.rawnats`) with the measured message sizes and counts, on
  as many connections as the workers' fleets used in all.

The per-cluster ablation needs every cluster's ID in one publisher and is left
to the single-process run (``not_measured``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from typing import Any

from benchmarks import harness as h
from benchmarks.rollout import (
    BASE_BUNDLE,
    ROLLOUT_BUNDLE,
    RSS_SETTLE_SECONDS,
    control_plane_env,
    counted,
    fleet_settings,
    raw_reference,
    registration_timed_out,
    rollout_ready,
    said,
)
from benchmarks.taps import DesiredTap, StoredReports
from benchmarks.worker import CONNECTIONS_PER_WORKER
from protocol import ids
from protocol.models import DeploymentOptions
from shoal_cli.client import AdminClient

WORKER_STOP_TIMEOUT = 60.0


async def _start_worker(
    url: str,
    token: str,
    *,
    count: int,
    offset: int,
    classes: int,
    heartbeat_interval: float | None = None,
    driven_heartbeats: bool = False,
) -> asyncio.subprocess.Process:
    extra = [] if heartbeat_interval is None else ["--heartbeat-interval", str(heartbeat_interval)]
    if driven_heartbeats:
        extra.append("--driven-heartbeats")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.worker",
        "--url", url, "--token", token,
        "--count", str(count), "--offset", str(offset), "--classes", str(classes),
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def start_workers(
    url: str,
    token: str,
    *,
    clusters: int,
    classes: int,
    processes: int,
    heartbeat_interval: float | None = None,
    driven_heartbeats: bool = False,
) -> list[asyncio.subprocess.Process]:
    """Start ``processes`` workers splitting clusters ``0..clusters-1`` between them."""
    share, extra = divmod(clusters, processes)
    workers: list[asyncio.subprocess.Process] = []
    offset = 0
    try:
        for index in range(processes):
            count = share + (1 if index < extra else 0)
            workers.append(
                await _start_worker(
                    url,
                    token,
                    count=count,
                    offset=offset,
                    classes=classes,
                    heartbeat_interval=heartbeat_interval,
                    driven_heartbeats=driven_heartbeats,
                )
            )
            offset += count
    except BaseException:
        await stop_workers(workers)
        raise
    return workers


async def _registered(worker: asyncio.subprocess.Process) -> int:
    assert worker.stdout is not None
    line = (await worker.stdout.readline()).decode().split()
    if len(line) != 2 or line[0] != "registered":
        raise RuntimeError(f"worker {worker.pid} exited before registering its clusters")
    return int(line[1])


async def registered(workers: list[asyncio.subprocess.Process]) -> int:
    """Wait until every worker has started its slice: clusters that failed to register."""
    return sum(await asyncio.gather(*(_registered(w) for w in workers)))


async def _ask(worker: asyncio.subprocess.Process, command: str) -> str:
    """Send ``command`` to a worker; its answer (see :mod:`benchmarks.worker`)."""
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(f"{command}\n".encode())
    await worker.stdin.drain()
    name, _, answer = (await worker.stdout.readline()).decode().strip().partition(" ")
    if name != command or answer in ("", "unknown"):
        raise RuntimeError(f"worker {worker.pid} did not answer {command!r}")
    return answer


async def ask(workers: list[asyncio.subprocess.Process], command: str) -> list[str]:
    """Every worker's answer to ``command``, asked together."""
    return list(await asyncio.gather(*(_ask(w, command) for w in workers)))


async def heartbeats_sent(workers: list[asyncio.subprocess.Process]) -> int:
    """Heartbeats the workers' agents have sent so far, summed."""
    return sum(int(answer) for answer in await ask(workers, "sent"))


async def members_per_class(workers: list[asyncio.subprocess.Process]) -> Counter[str]:
    """How many of the workers' agents subscribe to each class's subject, summed."""
    members: Counter[str] = Counter()
    for answer in await ask(workers, "members"):
        members.update(json.loads(answer))
    return members


async def blobs_downloaded(workers: list[asyncio.subprocess.Process]) -> tuple[int, int]:
    """(downloads, bytes) into the workers' blob caches so far, summed."""
    answers = [answer.split() for answer in await ask(workers, "blobs")]
    return sum(int(puts) for puts, _ in answers), sum(int(size) for _, size in answers)


async def run(
    *,
    clusters: int,
    classes: int,
    processes: int,
    timeout: float,
    driven: bool = False,
    heartbeat_interval: float | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "scenario": "rollout",
        "clusters": clusters,
        "classes": classes,
        "processes": processes,
        "connections": processes * CONNECTIONS_PER_WORKER,
        "driven_heartbeats": driven,
        "heartbeat_interval": fleet_settings(heartbeat_interval).heartbeat_interval,
        "ready": 0,
        "errors": [],
        "not_measured": ["ablation"],
    }
    workers: list[asyncio.subprocess.Process] = []
    env = control_plane_env(heartbeat_interval)
    async with h.Bench(cp_env=env) as bench, bench.client() as client:
        assert bench.cp is not None
        token = await bench.token(client)
        await h.apply_bundle(client, BASE_BUNDLE, "0", selector=h.class_selector(classes))
        await asyncio.sleep(h.CP_POLL)
        rss_before = bench.cp.rss_bytes()
        h.say(f"registering {clusters} clusters over {processes} worker processes")
        started = time.monotonic()
        try:
            workers = await start_workers(
                bench.url,
                token,
                clusters=clusters,
                classes=classes,
                processes=processes,
                heartbeat_interval=heartbeat_interval,
                driven_heartbeats=driven,
            )
            try:
                async with asyncio.timeout(timeout):
                    failed = await registered(workers)
            except TimeoutError:
                result["errors"].append(registration_timed_out(clusters, timeout))
                return result
            result["registration_seconds"] = round(time.monotonic() - started, 3)
            result["registration_failed"] = failed
            ready, seconds = await h.wait_ready(
                client, BASE_BUNDLE, clusters, timeout=timeout, label=BASE_BUNDLE
            )
            result["baseline_ready"] = ready
            if ready < clusters:
                result["errors"].append(
                    f"first bundle: only {ready} of {clusters} Ready within {timeout} s"
                )
                result["stuck_agents"] = [
                    agent for answer in await ask(workers, "stuck") for agent in json.loads(answer)
                ]
            result["baseline_seconds"] = round(seconds, 3)
            await asyncio.sleep(RSS_SETTLE_SECONDS)
            result["cp_rss_bytes_per_cluster"] = round(
                (bench.cp.rss_bytes() - rss_before) / clusters, 1
            )
            await _rollout(client, bench, workers, result, timeout=timeout)
        finally:
            await stop_workers(workers)
        await raw_reference(bench.url, result, timeout=timeout)
    return result


def fleet_cpu_seconds(workers: list[asyncio.subprocess.Process]) -> float:
    """CPU seconds the worker processes have used so far, summed."""
    return sum(h.proc_cpu_seconds(w.pid) for w in workers if w.returncode is None)


async def _rollout(
    client: AdminClient,
    bench: h.Bench,
    workers: list[asyncio.subprocess.Process],
    result: dict[str, Any],
    *,
    timeout: float,
) -> None:
    """Apply the second bundle; measure it from the control plane and the harness's taps."""
    clusters = result["clusters"]
    manifest, _ = h.bundle_blob(ROLLOUT_BUNDLE, "1")
    desired_tap = DesiredTap(client.nc)
    stored = StoredReports(
        client.nc, ROLLOUT_BUNDLE, ids.deployment_id(manifest, DeploymentOptions()), clusters
    )
    await desired_tap.start()
    try:
        await stored.mark()
        assert bench.cp is not None
        cp = bench.cp
        before = await h.stats(client)
        blobs_before = await blobs_downloaded(workers)
        cp_before, nats_before = cp.cpu_seconds(), bench.nats_cpu_seconds()
        fleet_before = fleet_cpu_seconds(workers)
        h.say(f"rollout: applying {ROLLOUT_BUNDLE} to {clusters} clusters")
        started, started_wall = time.monotonic(), time.time()
        await h.apply_bundle(client, ROLLOUT_BUNDLE, "1")
        ready = await rollout_ready(client, clusters, result, timeout=timeout)
        result["seconds_to_all_ready"] = round(time.monotonic() - started, 3)
        result["cp_cpu_seconds"] = round(cp.cpu_seconds() - cp_before, 3)
        result["nats_cpu_seconds"] = round(bench.nats_cpu_seconds() - nats_before, 3)
        result["fleet_cpu_seconds"] = round(fleet_cpu_seconds(workers) - fleet_before, 3)
        after = await h.stats(client)
        members = await members_per_class(workers)
        blobs_after = await blobs_downloaded(workers)
    finally:
        await desired_tap.stop()
    result["ready"] = ready
    counted(result, before, after)
    result.update(desired_tap.figures(members, clusters=clusters))
    result["blob_downloads"] = blobs_after[0] - blobs_before[0]
    result["blob_bytes"] = blobs_after[1] - blobs_before[1]
    result.update(await stored.figures(started_wall))
    said(result, ready, clusters, timeout=timeout)


async def stop_workers(workers: list[asyncio.subprocess.Process]) -> None:
    for worker in workers:
        if worker.stdin is not None:
            worker.stdin.close()

    async def stop(worker: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(worker.wait(), WORKER_STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                worker.kill()
            await worker.wait()

    # Together: a stop takes at most one timeout, not one per worker.
    await asyncio.gather(*(stop(worker) for worker in workers))
