"""``shoal server``: run the control plane."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from controlplane.settings import ServerSettings


def add_parser(commands: Any) -> None:
    server = commands.add_parser(
        "server",
        help="run the control plane",
        description="Run the shoal control plane. Without --nats-url it starts an embedded "
        "nats-server with JetStream, keeping its data under --data-dir and listening on "
        "--host:--port; with --nats-url it uses that NATS (or NATS cluster) instead.",
    )
    server.add_argument(
        "--data-dir", type=Path, help="JetStream storage of the embedded NATS (default ./.shoal)"
    )
    server.add_argument("--host", help="address of the embedded NATS (default 127.0.0.1)")
    server.add_argument(
        "--port", type=int, help="port of the embedded NATS (default 4222; 0 picks a free one)"
    )
    server.add_argument(
        "--nats-url", metavar="URL", help="use an existing NATS instead of the embedded one"
    )
    server.add_argument("--replicas", type=int, help="JetStream replicas (3 on a NATS cluster)")
    server.add_argument(
        "--shards",
        type=int,
        help="shards clusters hash into, fixed for the fleet's lifetime and the same on every "
        "replica (default 16)",
    )
    server.add_argument(
        "--heartbeat-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds without a heartbeat before a cluster is Offline (default 20)",
    )
    server.add_argument(
        "--git-cache-dir",
        type=Path,
        metavar="DIR",
        help="where gitrepos' repositories are cached and checked out (default DATA_DIR/git)",
    )
    server.add_argument(
        "--webhook-listen",
        metavar="HOST:PORT",
        help="serve the git webhook (GitHub and GitLab push events) here; needs "
        "SHOAL_WEBHOOK_SECRET (env SHOAL_WEBHOOK_LISTEN; default off)",
    )
    server.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    settings = ServerSettings.from_env(
        os.environ,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        nats_url=args.nats_url,
        replicas=args.replicas,
        shards=args.shards,
        heartbeat_timeout=args.heartbeat_timeout,
        git_cache_dir=args.git_cache_dir,
        webhook_listen=args.webhook_listen,
    )
    # Imported here: `shoal agent` shares this entry point and must not carry the
    # control plane's modules in its memory.
    from controlplane.server import run_server  # noqa: PLC0415

    await run_server(settings)
    return 0
