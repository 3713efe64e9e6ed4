"""``shoal demo``: the whole loop on this machine with simulated clusters.

An embedded NATS on a free port, the control plane, N simulated agents (the
real agent code with the simulated backend, sharing a few connections) and
the sample bundle shipped in ``controlplane/samples/shop-web``. Convergence is
read from the control plane, as ``shoal status`` would show it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from controlplane.settings import ServerSettings
from edgeagent.settings import AgentSettings
from protocol import admin, codec, ids
from protocol.models import BundleSpec, BundleTarget
from protocol.selectors import LabelSelector
from protocol.states import State
from shoal_cli import output
from shoal_cli.client import AdminClient
from shoal_cli.errors import CliError, UsageError

log = structlog.get_logger(__name__)

SAMPLE = Path(__file__).resolve().parent.parent / "controlplane" / "samples" / "shop-web"
BUNDLE = "shop-web"
ENVS = ("prod", "prod", "prod", "staging")
REGIONS = ("eu", "us", "apac")
POLL_INTERVAL = 0.5
AGENTS_PER_CONNECTION = 1000


def add_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run shoal with simulated clusters on this machine",
        description="Start an embedded NATS on a free port, the control plane and N simulated "
        "clusters in this process, apply the sample bundle to all of them and show progress "
        "until every cluster reports Ready. With --once, exit then and print one JSON line "
        '{"clusters": N, "ready": R, "seconds": S}; otherwise keep running (Ctrl-C stops) so '
        "you can try `shoal status --server URL` and friends against it.",
    )
    demo.add_argument(
        "--clusters", type=int, default=300, metavar="N", help="simulated clusters (default 300)"
    )
    demo.add_argument(
        "--once", action="store_true", help="exit when all clusters are Ready, printing JSON"
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="seconds to converge before giving up with a non-zero exit (default 120)",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        help="keep the embedded NATS data here (default: a temporary directory, removed after)",
    )
    demo.set_defaults(func=run)


def demo_labels(index: int) -> dict[str, str]:
    return {
        "env": ENVS[index % len(ENVS)],
        "region": REGIONS[(index // len(ENVS)) % len(REGIONS)],
        "shop": f"{index:06d}",
    }


async def _apply_sample(client: AdminClient) -> str:
    from controlplane.sources import read_directory  # noqa: PLC0415 (see run)

    resources = read_directory(SAMPLE)
    blob = codec.encode_resources(resources)
    manifest = ids.manifest_id_of_blob(blob)
    await client.upload_blob(manifest, blob)
    spec = BundleSpec(name=BUNDLE, targets=(BundleTarget(cluster_selector=LabelSelector()),))
    reply = await client.admin(
        admin.BundleApply(spec=spec, manifest_id=manifest), admin.BundleApplied
    )
    return ", ".join(reply.deployment_ids)


async def _ready(client: AdminClient) -> int:
    reply = await client.admin(admin.BundleList(), admin.BundleListReply)
    for summary in reply.bundles:
        if summary.name == BUNDLE:
            return summary.states.get(State.READY, 0)
    return 0


async def run(args: argparse.Namespace) -> int:
    # Imported here: `shoal agent` shares this entry point and must not carry the
    # control plane's or the simulator's modules in its memory.
    from controlplane.server import ControlPlane  # noqa: PLC0415
    from edgeagent.simfleet import SimulatedFleet  # noqa: PLC0415

    if args.clusters < 1:
        raise UsageError("--clusters must be at least 1")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="shoal-demo-"))
    started = time.monotonic()
    try:
        settings = ServerSettings(data_dir=data_dir, port=0)
        async with ControlPlane(settings) as plane:
            output.note(f"shoal demo: control plane on {plane.url}")
            async with AdminClient(plane.url) as client:
                token = (
                    await client.admin(
                        admin.TokenCreate(ttl_seconds=3600, description="demo"), admin.TokenCreated
                    )
                ).token
                fleet = SimulatedFleet(
                    count=args.clusters,
                    token=token,
                    settings=AgentSettings.from_env(os.environ),
                    url=plane.url,
                    connections=max(1, min(8, args.clusters // AGENTS_PER_CONNECTION + 1)),
                    labels_for=demo_labels,
                )
                output.note(f"starting {args.clusters} simulated clusters ...")
                async with fleet:
                    if fleet.failed:
                        first = next(iter(fleet.failed.items()))
                        raise CliError(f"{len(fleet.failed)} agents failed to start: {first}")
                    registered = time.monotonic()
                    deployment = await _apply_sample(client)
                    output.note(
                        f"{args.clusters} clusters registered in {registered - started:.1f} s; "
                        f"applied bundle {BUNDLE} ({deployment})"
                    )
                    ready = await _converge(client, args, started)
                    seconds = round(time.monotonic() - started, 2)
                    if ready < args.clusters:
                        print(
                            json.dumps(
                                {"clusters": args.clusters, "ready": ready, "seconds": seconds}
                            )
                        )
                        raise CliError(
                            f"only {ready} of {args.clusters} clusters Ready after "
                            f"{args.timeout:.0f} s"
                        )
                    if args.once:
                        print(
                            json.dumps(
                                {"clusters": args.clusters, "ready": ready, "seconds": seconds}
                            )
                        )
                        return 0
                    output.note(
                        f"all {ready} clusters Ready in {seconds} s. Try, in another shell:\n"
                        f"  shoal status --server {plane.url}\n"
                        f"  shoal clusters --server {plane.url} -l env=staging\n"
                        "Ctrl-C stops the demo."
                    )
                    await asyncio.Event().wait()
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


async def _converge(client: AdminClient, args: argparse.Namespace, started: float) -> int:
    deadline = started + args.timeout
    ready = 0
    progress = output.Progress("Ready", args.clusters)
    try:
        while time.monotonic() < deadline:
            ready = await _ready(client)
            progress.update(ready, time.monotonic() - started)
            if ready >= args.clusters:
                break
            await asyncio.sleep(POLL_INTERVAL)
    finally:
        progress.close()
    return ready
