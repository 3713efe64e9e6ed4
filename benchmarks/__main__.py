"""``python -m benchmarks SCENARIO``: run one named scale scenario and record its figures.

Each scenario lives in its own module and returns a flat dict of figures.
This module adds the machine facts and the command, prints progress on
stderr, writes the result as JSON under ``benchmarks/results/`` (or
``--results-dir``) and, with ``--json``, prints the same object as the last
line of stdout, which is the contract scripts and the test rely on. The exit
status is non-zero when the scenario did not converge or failed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from benchmarks import (
    failover,
    footprint,
    harness,
    heartbeat,
    multiproc,
    reconnect,
    registry,
    rollout,
)
from shoal_cli import gcpolicy, logs

DEFAULT_CLUSTERS = 1000
DEFAULT_CLASSES = 4
DEFAULT_TIMEOUT = 300.0
TIMEOUT_PER_CLUSTER = 0.004  # seconds: registration here runs at 500-800 clusters/s
AUTO_PROCESSES_FROM = 20_000  # clusters from which the fleet gets a worker process per core
DEFAULT_WINDOW = 10.0
DEFAULT_HEARTBEAT_INTERVAL = 0.5
DEFAULT_BUNDLES = 10
HARNESS_LOG_LEVEL = "warning"

Scenario = Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]


async def _rollout(args: argparse.Namespace) -> dict[str, Any]:
    if args.processes > 1:
        return await multiproc.run(
            clusters=args.clusters,
            classes=args.classes,
            processes=args.processes,
            timeout=args.timeout,
            driven=args.driven_heartbeats,
            heartbeat_interval=args.heartbeat_interval,
        )
    return await rollout.run(
        clusters=args.clusters,
        classes=args.classes,
        timeout=args.timeout,
        heartbeat_interval=args.heartbeat_interval,
    )


async def _failover(args: argparse.Namespace) -> dict[str, Any]:
    return await failover.run(clusters=args.clusters, classes=args.classes, timeout=args.timeout)


async def _reconnect(args: argparse.Namespace) -> dict[str, Any]:
    return await reconnect.run(clusters=args.clusters, classes=args.classes, timeout=args.timeout)


async def _heartbeat(args: argparse.Namespace) -> dict[str, Any]:
    return await heartbeat.run(
        clusters=args.clusters,
        classes=args.classes,
        timeout=args.timeout,
        window=args.window,
        interval=args.heartbeat_interval,
        processes=args.processes,
        driven=args.driven_heartbeats,
    )


async def _footprint(args: argparse.Namespace) -> dict[str, Any]:
    return await footprint.run(bundles=args.bundles, window=args.window, timeout=args.timeout)


async def _registry(args: argparse.Namespace) -> dict[str, Any]:
    return await registry.run(clusters=args.clusters, classes=args.classes, timeout=args.timeout)


SCENARIOS: dict[str, tuple[Scenario, str]] = {
    "rollout": (
        _rollout,
        "N clusters in K label classes, one bundle change: seconds until the control plane "
        "shows all Ready, its publishes, memory per cluster, desired bytes per cluster, "
        "with the raw NATS reference and the one-message-per-cluster ablation",
    ),
    "failover": (
        _failover,
        "two control-plane replicas, the leader SIGKILLed right after a bundle change: "
        "seconds until the survivor shows all Ready, and that it owns every shard",
    ),
    "reconnect": (
        _reconnect,
        "a tenth of the clusters cut off the bus (a TCP proxy) during a rollout: seconds until "
        "the rest are Ready, whether the control plane marks the cut ones Offline, and seconds "
        "from the link's return until they are Ready with the new deployment",
    ),
    "heartbeat": (
        _heartbeat,
        "steady state, no changes: heartbeats ingested per second by the control plane "
        "and its CPU seconds over a window",
    ),
    "registry": (
        _registry,
        "N clusters registered and reporting by the harness itself (no agents): the "
        "control plane's memory per registered cluster, and registrations per second",
    ),
    "footprint": (
        _footprint,
        "one real agent process on the kubernetes backend (an emulated API server) holding "
        "--bundles Ready bundles: its idle RSS and CPU over --window seconds (goal 60 MB)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="shoal's scale benchmarks. Each run starts its own nats-server (127.0.0.1, "
        "a free port) and a `shoal server` process, runs N simulated clusters (the real agent "
        "with the simulated backend) in this process or in worker processes, prints progress "
        "on stderr and writes "
        "its figures as JSON under benchmarks/results/. Scenarios: "
        + "; ".join(f"{name}: {text}" for name, (_, text) in SCENARIOS.items()),
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS), help="which scenario to run")
    parser.add_argument(
        "--clusters",
        type=int,
        default=DEFAULT_CLUSTERS,
        metavar="N",
        help=f"simulated clusters (default {DEFAULT_CLUSTERS})",
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=DEFAULT_CLASSES,
        metavar="K",
        help=f"label classes the clusters fall into (default {DEFAULT_CLASSES})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds any one wait, registration of the fleet included, may take before the "
        f"run gives up (default {DEFAULT_TIMEOUT:.0f}, or {TIMEOUT_PER_CLUSTER * 1000:g} ms "
        "per cluster if that is longer: 400 s at 100,000)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW,
        metavar="S",
        help=f"heartbeat: seconds the ingest rate is measured over (default {DEFAULT_WINDOW:.0f})",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=None,
        metavar="S",
        help="heartbeat, rollout: seconds between one cluster's heartbeats (default "
        f"{DEFAULT_HEARTBEAT_INTERVAL} for heartbeat; "
        f"{rollout.FLEET_SETTINGS.heartbeat_interval:g} for rollout, the agent's own default)",
    )
    parser.add_argument(
        "--driven-heartbeats",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="heartbeat, rollout with more than one process: one task per fleet process paces "
        "every agent's own heartbeat (Reporter.beat, one message per cluster) instead of one "
        "timer per agent, so the fleet offers more than its timers would allow on this machine "
        "(default: on for a rollout over worker processes, off for heartbeat)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="P",
        help="rollout, heartbeat: spread the simulated fleet over P worker processes (default: "
        f"1 below {AUTO_PROCESSES_FROM:,} clusters, where the fleet runs in this process and "
        "every figure is measured; from there, one per CPU, "
        f"{os.cpu_count() or 1} on this machine)",
    )
    parser.add_argument(
        "--bundles",
        type=int,
        default=DEFAULT_BUNDLES,
        metavar="B",
        help=f"footprint: bundles the agent holds (default {DEFAULT_BUNDLES})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON object, the last line"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=harness.RESULTS_DIR,
        metavar="DIR",
        help="where the result file goes (default benchmarks/results/)",
    )
    return parser


async def _stoppable(run: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """SIGINT or SIGTERM cancel the run, so its ``finally`` blocks stop the nats-server,
    the control plane and the workers it started (even under ``nohup`` or ``&``)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)
    return await run


def resolve_defaults(args: argparse.Namespace) -> None:
    """Fill in the defaults that depend on the run: the fleet's size and the machine."""
    if args.timeout is None:
        args.timeout = max(DEFAULT_TIMEOUT, TIMEOUT_PER_CLUSTER * args.clusters)
    if args.processes is None:
        large = args.clusters >= AUTO_PROCESSES_FROM
        args.processes = max(1, os.cpu_count() or 1) if large else 1
    if args.driven_heartbeats is None:
        args.driven_heartbeats = args.scenario == "rollout" and args.processes > 1
    if args.heartbeat_interval is None and args.scenario == "heartbeat":
        args.heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resolve_defaults(args)
    positive = (args.clusters, args.classes, args.timeout, args.processes)
    if min(positive) <= 0 or (args.heartbeat_interval is not None and args.heartbeat_interval <= 0):
        print(
            "--clusters, --classes, --timeout, --processes and --heartbeat-interval must be "
            "positive",
            file=sys.stderr,
        )
        return 2
    gcpolicy.tune(fleet=True)  # scenarios run simulated fleets in this process
    logs.configure(HARNESS_LOG_LEVEL)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    func, _ = SCENARIOS[args.scenario]
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    try:
        result = asyncio.run(_stoppable(func(args)))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted: child processes stopped, no result written", file=sys.stderr)
        return 130
    result["command"] = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    result["started_at"] = started_at
    result["timeout_seconds"] = args.timeout
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["machine"] = harness.machine_facts()
    result["ok"] = not result.get("errors")
    size = args.bundles if args.scenario == "footprint" else args.clusters
    path = harness.write_results(
        result, scenario=args.scenario, clusters=size, directory=args.results_dir
    )
    harness.say(f"result written to {path}")
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(json.dumps(result, indent=2, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
