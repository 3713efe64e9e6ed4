"""The ``reconnect`` scenario: a tenth of the fleet loses the bus during a rollout and comes back.

N simulated clusters converge on a first bundle. A tenth of them (the last
indices, spread over every class) reach nats-server through a
:class:`~benchmarks.tcpproxy.CuttableProxy` on connections of their own, as
a site behind one uplink does. Then:

1. The proxy is cut (every connection aborted, new ones refused) and at once
   a second bundle is applied: the cut clusters cannot hear of it.
2. The rest converge: ``seconds_to_all_ready`` runs from the apply until the
   control plane shows the others Ready.
3. The cut clusters' heartbeats have stopped; the control plane (run with a
   short ``SHOAL_HEARTBEAT_TIMEOUT``) marks them Offline: ``marked_offline``
   and ``seconds_to_offline`` (from the cut). Meanwhile the agents keep
   enforcing what they had (invariant 6): ``offline_still_enforcing`` counts
   cut agents whose applied first bundle is still Ready locally.
4. The proxy is restored. nats-py reconnects on its own timer, each agent
   re-reads its full desired state from the bus (invariant 2: the control
   plane replays nothing), applies the second bundle and reports.
   ``seconds_to_reconverge`` runs from the restore until the control plane
   shows all N Ready and none Offline; ``seconds_to_reconnect`` until every
   cut connection is up again (bounded below by the agents'
   ``reconnect_wait``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks import harness as h
from benchmarks.rollout import connections_for
from benchmarks.tcpproxy import CuttableProxy
from edgeagent.settings import AgentSettings
from edgeagent.simfleet import ConnectionGroup, SimulatedFleet
from protocol import admin
from protocol.states import State
from shoal_cli.client import AdminClient

BASE_BUNDLE = "base"
ROLLOUT_BUNDLE = "web"
GROUP = "cut"
OFFLINE_FRACTION = 0.1
AGENTS_PER_CUT_CONNECTION = 500
HEARTBEAT_TIMEOUT = 3.0
STARTUP_GRACE = 1.0
# The control plane marks a cluster Offline one sweep after its deadline bucket.
OFFLINE_MARGIN = 5.0
FLEET_SETTINGS = AgentSettings(
    status_interval=0.25,
    heartbeat_interval=1.0,
    sim_readiness_delay=0.05,
    observe_interval_not_ready=0.1,
    resync_interval=3600.0,
    reconnect_wait=0.5,
)
CP_ENV = {
    "SHOAL_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
    "SHOAL_STARTUP_GRACE": str(STARTUP_GRACE),
}


async def bundle_states(client: AdminClient, bundle: str) -> dict[State, int]:
    reply = await client.admin(admin.BundleList(), admin.BundleListReply)
    return next((dict(b.states) for b in reply.bundles if b.name == bundle), {})


async def wait_states(
    client: AdminClient,
    bundle: str,
    done: dict[State, int],
    *,
    timeout: float,
    label: str,
) -> tuple[dict[State, int], float]:
    """Poll the BundleList until every state in ``done`` reaches its count: (states, seconds)."""
    started = time.monotonic()
    last_said = started
    while True:
        states = await bundle_states(client, bundle)
        now = time.monotonic()
        if all(states.get(s, 0) >= n for s, n in done.items()) or now - started >= timeout:
            return states, now - started
        if now - last_said >= 1.0:
            h.say(f"{label}: {_show(states)} after {now - started:.1f} s")
            last_said = now
        await asyncio.sleep(h.READY_POLL)


def _show(states: dict[State, int]) -> dict[str, int]:
    return {s.value: n for s, n in sorted(states.items())}


async def run(*, clusters: int, classes: int, timeout: float) -> dict[str, Any]:
    offline = max(1, int(clusters * OFFLINE_FRACTION))
    rest = clusters - offline
    result: dict[str, Any] = {
        "scenario": "reconnect",
        "clusters": clusters,
        "classes": classes,
        "offline_clusters": offline,
        "ready": 0,
        "marked_offline": False,
        "errors": [],
        "heartbeat_timeout": HEARTBEAT_TIMEOUT,
        "settings": FLEET_SETTINGS.model_dump(
            include={"status_interval", "heartbeat_interval", "reconnect_wait"}
        ),
    }
    async with (
        h.Bench(cp_env=CP_ENV) as bench,
        bench.client() as client,
        CuttableProxy.to_url(bench.url) as proxy,
    ):
        token = await bench.token(client)
        await h.apply_bundle(client, BASE_BUNDLE, "0", selector=h.class_selector(classes))
        group = ConnectionGroup(
            name=GROUP,
            url=proxy.url,
            members=range(rest, clusters),
            connections=max(1, -(-offline // AGENTS_PER_CUT_CONNECTION)),
        )
        result["offline_connections"] = group.connections
        fleet = SimulatedFleet(
            count=clusters,
            token=token,
            settings=FLEET_SETTINGS,
            url=bench.url,
            connections=connections_for(rest),
            labels_for=h.class_labels(classes),
            groups=[group],
        )
        h.say(f"registering {clusters} clusters, {offline} of them through the cuttable proxy")
        try:
            started = time.monotonic()
            async with asyncio.timeout(timeout):
                await fleet.start()
            result["registration_seconds"] = round(time.monotonic() - started, 3)
            if fleet.failed:
                result["errors"].append(f"{len(fleet.failed)} clusters failed to register")
                return result
            ready, _ = await h.wait_ready(
                client, BASE_BUNDLE, clusters, timeout=timeout, label=BASE_BUNDLE
            )
            if ready < clusters:
                result["errors"].append(f"base: only {ready} of {clusters} Ready")
                return result
            await _cut_and_roll(client, fleet, proxy, result, timeout=timeout)
        finally:
            await fleet.stop()
    return result


async def _cut_and_roll(
    client: AdminClient,
    fleet: SimulatedFleet,
    proxy: CuttableProxy,
    result: dict[str, Any],
    *,
    timeout: float,
) -> None:
    clusters, offline = result["clusters"], result["offline_clusters"]
    rest = clusters - offline
    cut_agents = fleet.group_agents[GROUP]
    h.say(f"cutting {offline} clusters off the bus, then applying {ROLLOUT_BUNDLE}")
    cut_at = time.monotonic()
    proxy.cut()
    await h.apply_bundle(client, ROLLOUT_BUNDLE, "1")
    states, seconds = await wait_states(
        client, ROLLOUT_BUNDLE, {State.READY: rest}, timeout=timeout, label="rest"
    )
    result["seconds_to_all_ready"] = round(seconds, 3)
    result["rest_ready"] = states.get(State.READY, 0)
    if result["rest_ready"] < rest:
        result["errors"].append(f"rest: only {result['rest_ready']} of {rest} Ready")
        return
    states, _ = await wait_states(
        client,
        ROLLOUT_BUNDLE,
        {State.OFFLINE: offline},
        timeout=min(timeout, HEARTBEAT_TIMEOUT + OFFLINE_MARGIN),
        label="offline",
    )
    result["states_while_cut"] = _show(states)
    result["marked_offline"] = states.get(State.OFFLINE, 0) == offline
    result["seconds_to_offline"] = round(time.monotonic() - cut_at, 3)
    result["cut_connections_down"] = fleet.group_connected(GROUP) == 0
    # They know only the first bundle: all Ready means they still hold and watch it.
    result["offline_still_enforcing"] = sum(1 for a in cut_agents if a.reconciler.all_ready())
    if not result["marked_offline"]:
        result["errors"].append(f"the control plane did not mark {offline} Offline: {states}")
    if result["offline_still_enforcing"] < offline:
        result["errors"].append(
            f"only {result['offline_still_enforcing']} of {offline} cut agents kept {BASE_BUNDLE}"
        )

    h.say(f"restoring the link of {offline} clusters")
    reconnects_before = fleet.group_reconnects(GROUP)
    restored = time.monotonic()
    proxy.restore()
    connections: int = result["offline_connections"]

    async def all_connected() -> bool:
        return fleet.group_connected(GROUP) == connections

    if await h.wait_for(all_connected, timeout=timeout, poll=0.05):
        result["seconds_to_reconnect"] = round(time.monotonic() - restored, 3)
    states, _ = await wait_states(
        client, ROLLOUT_BUNDLE, {State.READY: clusters}, timeout=timeout, label="reconverge"
    )
    result["seconds_to_reconverge"] = round(time.monotonic() - restored, 3)
    result["reconnects"] = fleet.group_reconnects(GROUP) - reconnects_before
    result["ready"] = states.get(State.READY, 0)
    result["final_states"] = _show(states)
    if states != {State.READY: clusters}:
        result["errors"].append(f"after reconnecting: {result['final_states']}")
    h.say(
        f"reconnect: rest Ready in {result['seconds_to_all_ready']} s, {offline} back and "
        f"Ready {result['seconds_to_reconverge']} s after the link returned"
    )
