"""A slice of a simulated fleet in its own process: ``python -m benchmarks.worker``.

One Python process runs about 3,500 simulated clusters' rollouts per second
(2026-12-03, see README), and its event loop slows as it holds more agents:
beyond some tens of thousands, the fleet is spread over processes. A worker
runs clusters ``offset .. offset+count-1`` (names and labels as the
single-process fleet gives them), prints ``registered <failed>`` on stdout
once they are all started, then answers each command line on its
stdin with one line on stdout, the command followed by its answer, and stops
when its stdin closes:

* ``sent``: ``sent <heartbeats sent so far>`` (the ``heartbeat`` scenario's
  offered rate);
* ``members``: ``members <JSON object>``, how many of its agents subscribe to
  each class's subject (:func:`benchmarks.taps.class_members`), which the
  harness's desired-state tap charges the class messages to;
* ``blobs``: ``blobs <downloads> <bytes>`` put into its fleet's blob cache so far;
* ``stuck``: ``stuck <JSON list>``, up to 20 of its agents not all Ready, each as
  it sees itself (:func:`benchmarks.taps.stuck_agents`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys

from benchmarks import harness as h
from benchmarks.rollout import CountingBlobCache, fleet_settings
from benchmarks.taps import class_members, stuck_agents
from edgeagent.simfleet import SimulatedFleet, sim_name
from shoal_cli import gcpolicy, logs

CONNECTIONS_PER_WORKER = 4


def answer(command: str, fleet: SimulatedFleet, blobs: CountingBlobCache) -> str:
    """The answer to one of the harness's commands (see the module docstring)."""
    match command:
        case "sent":
            return str(sum(a.reporter.heartbeats_sent for a in fleet.agents))
        case "members":
            return json.dumps(class_members(fleet.agents))
        case "blobs":
            return f"{blobs.puts} {blobs.bytes}"
        case "stuck":
            return json.dumps(stuck_agents(fleet.agents))
        case _:
            return "unknown"


async def run(args: argparse.Namespace) -> None:
    labels = h.class_labels(args.classes)
    settings = fleet_settings(args.heartbeat_interval)
    fleet = SimulatedFleet(
        count=args.count,
        token=args.token,
        settings=settings,
        url=args.url,
        connections=CONNECTIONS_PER_WORKER,
        labels_for=lambda i: labels(args.offset + i),
        name_for=lambda i: sim_name(args.offset + i),
        driven_heartbeats=args.driven_heartbeats,
    )
    blobs = CountingBlobCache()
    fleet.blob_cache = blobs
    await fleet.start()
    driver = asyncio.create_task(fleet.drive_heartbeats()) if args.driven_heartbeats else None
    try:
        print(f"registered {len(fleet.failed)}", flush=True)
        loop = asyncio.get_running_loop()
        # Until the harness closes stdin (readline returns "").
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if command := line.strip():
                print(f"{command} {answer(command, fleet, blobs)}", flush=True)
    finally:
        if driver is not None:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver
        await fleet.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--offset", type=int, required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--heartbeat-interval", type=float, default=None)
    parser.add_argument("--driven-heartbeats", action="store_true")
    args = parser.parse_args()
    gcpolicy.tune(fleet=True)
    logs.configure("warning")
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
