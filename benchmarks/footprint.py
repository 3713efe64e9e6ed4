"""Scenario ``footprint``: the idle memory and CPU of one real agent on the Kubernetes backend.

An edge node's agent shares a small machine with the workloads it deploys,
so its idle cost matters more than its speed. This scenario runs the real
``shoal agent --backend kubernetes --kubeconfig PATH`` process against the
emulated API server of the Kubernetes tests (``tests/integration/kube/
emulator.py``, in a process of its own, acting as the Deployment controller
too; so the scenario runs from a source checkout), applies ``--bundles``
bundles (a Deployment, a Service and a ConfigMap each) through the control
plane, waits until all are Ready, lets the agent settle, then samples the
agent process every second over ``--window`` seconds:

* ``agent_rss_bytes_max`` / ``_mean``: VmRSS from /proc (goal: 60 MB);
* ``agent_cpu_seconds`` and ``agent_cpu_percent`` over the window: what the
  idle agent costs with its drift watches open and heartbeats going out;
* ``agent_rss_after_apply_bytes``: right after convergence, before settling.

Only the agent process is measured; nats-server, the control plane and the
emulated cluster run beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import harness as h
from protocol import admin, codec, ids
from protocol.models import BundleResource, BundleSpec, BundleTarget
from protocol.selectors import LabelSelector
from shoal_cli.client import AdminClient

REPO = Path(__file__).resolve().parents[1]
SETTLE_SECONDS = 5.0
SAMPLE_SECONDS = 1.0
GOAL_RSS_BYTES = 60 * 1024 * 1024
AGENT_ENV = {
    "SHOAL_LOG_LEVEL": "warning",
    "SHOAL_STATUS_INTERVAL": "1",
    "SHOAL_OBSERVE_INTERVAL_NOT_READY": "0.5",
}


def _bundle(name: str) -> list[BundleResource]:
    labels = {"app": name}
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": labels, "ports": [{"port": 80}]},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-config"},
            "data": {"greeting": f"hello from {name}"},
        },
    ]
    return [BundleResource(name="all.yaml", content=yaml.safe_dump_all(objects))]


async def _apply(client: AdminClient, name: str) -> None:
    blob = codec.encode_resources(_bundle(name))
    manifest = ids.manifest_id_of_blob(blob)
    await client.upload_blob(manifest, blob)
    spec = BundleSpec(name=name, targets=(BundleTarget(cluster_selector=LabelSelector()),))
    await client.admin(admin.BundleApply(spec=spec, manifest_id=manifest), admin.BundleApplied)


def _kubeconfig(path: Path, url: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "edge", "cluster": {"server": url}}],
        "users": [{"name": "shoal", "user": {"token": "footprint"}}],
        "contexts": [{"name": "edge", "context": {"cluster": "edge", "user": "shoal"}}],
        "current-context": "edge",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def run(*, bundles: int, window: float, timeout: float) -> dict[str, Any]:
    errors: list[str] = []
    async with h.Bench() as bench, bench.client() as client:
        port = _free_port()
        cluster = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.kube.emulator",
            str(port),
            "--rollout",
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        agent: asyncio.subprocess.Process | None = None
        try:
            assert cluster.stdout is not None
            line = await asyncio.wait_for(cluster.stdout.readline(), h.CP_START_TIMEOUT)
            url = line.decode().split()[-1]
            h.say(f"emulated cluster at {url}")
            kubeconfig = _kubeconfig(bench.tmp / "kubeconfig", url)
            with (bench.tmp / "agent.log").open("ab") as log:
                agent = await asyncio.create_subprocess_exec(
                    h.shoal_executable(),
                    "agent",
                    "--name", "edge-1",
                    "--token", await bench.token(client),
                    "--backend", "kubernetes",
                    "--kubeconfig", str(kubeconfig),
                    "--state-dir", str(bench.tmp / "agent"),
                    "--server", bench.url,
                    env={**os.environ, **AGENT_ENV},
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )  # fmt: skip
            names = [f"app-{i:02d}" for i in range(bundles)]
            started = time.monotonic()
            for name in names:
                await _apply(client, name)
            for name in names:
                ready, _ = await h.wait_ready(client, name, 1, timeout=timeout, label=name)
                if ready < 1:
                    errors.append(f"{name} not Ready within {timeout:.0f} s")
            converged = time.monotonic() - started
            if errors:
                h.say("agent log tail:\n" + (bench.tmp / "agent.log").read_text()[-3000:])
            h.say(f"{bundles} bundles Ready after {converged:.1f} s; settling")
            after_apply = h.proc_rss_bytes(agent.pid)
            await asyncio.sleep(SETTLE_SECONDS)
            cpu_before, t_before = h.proc_cpu_seconds(agent.pid), time.monotonic()
            samples: list[int] = []
            while time.monotonic() - t_before < window:
                samples.append(h.proc_rss_bytes(agent.pid))
                await asyncio.sleep(SAMPLE_SECONDS)
            cpu = h.proc_cpu_seconds(agent.pid) - cpu_before
            elapsed = time.monotonic() - t_before
        finally:
            for proc in (agent, cluster):
                if proc is not None and proc.returncode is None:
                    proc.terminate()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.wait(), h.CP_STOP_TIMEOUT)
    rss_max = max(samples)
    if rss_max > GOAL_RSS_BYTES:
        h.say(f"agent RSS {rss_max / 2**20:.1f} MiB is above the 60 MB goal")
    return {
        "scenario": "footprint",
        "bundles": bundles,
        "objects": bundles * 3,
        "window_seconds": round(elapsed, 1),
        "converge_seconds": round(converged, 1),
        "agent_rss_after_apply_bytes": after_apply,
        "agent_rss_bytes_max": rss_max,
        "agent_rss_bytes_mean": int(sum(samples) / len(samples)),
        "agent_rss_mib_max": round(rss_max / 2**20, 1),
        "agent_cpu_seconds": round(cpu, 3),
        "agent_cpu_percent": round(100 * cpu / elapsed, 2),
        "goal_rss_bytes": GOAL_RSS_BYTES,
        "within_goal": rss_max <= GOAL_RSS_BYTES,
        "errors": errors,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((h.LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port
