"""``rollout --processes P``: the rollout scenario with the fleet spread over P processes.

The single-process rollout measures everything (bytes on the wire, blob
downloads, the per-cluster ablation) but one Python process saturates at
some tens of thousands of clusters. Here P worker processes
(:mod:`benchmarks.worker`) each run a slice of the fleet; the harness keeps
the control plane's view: registration time (until every worker reports its
slice started), convergence on a first bundle, control-plane memory per
cluster, and the rollout of a second bundle until the control plane shows all
N Ready, with its publishes and CPU. Figures that need the agents' objects
(desired bytes per cluster, blob downloads, the ablation) are left to the
single-process run.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any

from benchmarks import harness as h
from benchmarks.rollout import BASE_BUNDLE, ROLLOUT_BUNDLE, RSS_SETTLE_SECONDS

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


async def heartbeats_sent(workers: list[asyncio.subprocess.Process]) -> int:
    """Heartbeats the workers' agents have sent so far, summed."""

    async def ask(worker: asyncio.subprocess.Process) -> int:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(b"sent\n")
        await worker.stdin.drain()
        line = (await worker.stdout.readline()).decode().split()
        if len(line) != 2 or line[0] != "sent":
            raise RuntimeError(f"worker {worker.pid} did not answer")
        return int(line[1])

    return sum(await asyncio.gather(*(ask(w) for w in workers)))


async def run(
    *, clusters: int, classes: int, processes: int, timeout: float, driven: bool = False
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "scenario": "rollout",
        "clusters": clusters,
        "classes": classes,
        "processes": processes,
        "driven_heartbeats": driven,
        "ready": 0,
        "errors": [],
        "not_measured": ["bytes_per_cluster", "blob_bytes", "ablation", "raw_nats_seconds"],
    }
    workers: list[asyncio.subprocess.Process] = []
    async with h.Bench() as bench, bench.client() as client:
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
                driven_heartbeats=driven,
            )
            async with asyncio.timeout(timeout):
                failed = await registered(workers)
            result["registration_seconds"] = round(time.monotonic() - started, 3)
            result["registration_failed"] = failed
            ready, seconds = await h.wait_ready(
                client, BASE_BUNDLE, clusters, timeout=timeout, label=BASE_BUNDLE
            )
            result["baseline_ready"] = ready
            result["baseline_seconds"] = round(seconds, 3)
            await asyncio.sleep(RSS_SETTLE_SECONDS)
            result["cp_rss_bytes_per_cluster"] = round(
                (bench.cp.rss_bytes() - rss_before) / clusters, 1
            )
            before = await h.stats(client)
            cpu_before = bench.cp.cpu_seconds()
            h.say(f"rollout: applying {ROLLOUT_BUNDLE} to {clusters} clusters")
            started = time.monotonic()
            await h.apply_bundle(client, ROLLOUT_BUNDLE, "1")
            ready, _ = await h.wait_ready(
                client, ROLLOUT_BUNDLE, clusters, timeout=timeout, label=ROLLOUT_BUNDLE
            )
            result["seconds_to_all_ready"] = round(time.monotonic() - started, 3)
            result["ready"] = ready
            result["cp_cpu_seconds"] = round(bench.cp.cpu_seconds() - cpu_before, 3)
            after = await h.stats(client)
            result["cp_publishes"] = after["desired_publishes"] - before["desired_publishes"]
            if ready < clusters:
                result["errors"].append(f"only {ready} of {clusters} Ready within {timeout} s")
        finally:
            await stop_workers(workers)
    return result


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
