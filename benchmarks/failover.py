"""The ``failover`` scenario: a control-plane replica killed in the middle of a rollout.

Two ``shoal server --nats-url URL`` processes share the shards (leases in the
``shoal-leases`` KV bucket, a short TTL so the run is quick). N simulated
clusters converge on a first bundle; a second bundle is applied and, at once,
the replica holding the ``leader`` lease (the one that publishes desired
state) is SIGKILLed, as a crash would. Measured: seconds until the surviving
replica shows all N Ready, whether it then owns every shard, and that the
final count is exactly N Ready (nothing lost, nothing counted twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from benchmarks import harness as h
from edgeagent.settings import AgentSettings
from edgeagent.simfleet import SimulatedFleet
from protocol import admin
from protocol.states import State

LEASE_TTL = 3.0
BASE_BUNDLE = "base"
ROLLOUT_BUNDLE = "web"
FLEET_SETTINGS = AgentSettings(
    status_interval=0.25,
    heartbeat_interval=2.0,
    sim_readiness_delay=0.05,
    observe_interval_not_ready=0.1,
)
REPLICAS = ("replica-a", "replica-b")


def replica_env(name: str) -> dict[str, str]:
    return {
        "SHOAL_LEASE_TTL": str(LEASE_TTL),
        "SHOAL_REPLICA_ID": name,
        "SHOAL_HEARTBEAT_TIMEOUT": "30",
    }


async def lease_owners(kv: KeyValue) -> dict[str, str]:
    """Lease key -> replica, for shard and leader keys."""
    owners: dict[str, str] = {}
    try:
        keys = await kv.keys()
    except NoKeysError:
        return owners
    for key in keys:
        if key.startswith("shard-") or key == "leader":
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(key)
                owners[key] = (entry.value or b"").decode()
    return owners


async def run(*, clusters: int, classes: int, timeout: float) -> dict[str, Any]:
    result: dict[str, Any] = {
        "scenario": "failover",
        "clusters": clusters,
        "classes": classes,
        "ready": 0,
        "errors": [],
        "lease_ttl": LEASE_TTL,
    }
    async with h.Bench(cp_env=replica_env(REPLICAS[0])) as bench, bench.client() as client:
        second = h.ControlPlaneProcess(
            bench.url, bench.tmp / REPLICAS[1], env=replica_env(REPLICAS[1])
        )
        await second.start()
        replicas = {REPLICAS[0]: bench.cp, REPLICAS[1]: second}
        try:
            kv = await client.nc.jetstream().key_value("shoal-leases")

            async def split() -> bool:
                owners = await lease_owners(kv)
                holders = {v for k, v in owners.items() if k.startswith("shard-")}
                return holders == set(REPLICAS)

            if not await h.wait_for(split, timeout=timeout):
                result["errors"].append("the two replicas did not split the shards")
                return result
            token = await bench.token(client)
            await h.apply_bundle(client, BASE_BUNDLE, "0", selector=h.class_selector(classes))
            fleet = SimulatedFleet(
                count=clusters,
                token=token,
                settings=FLEET_SETTINGS,
                url=bench.url,
                connections=max(1, min(8, clusters // 1000 + 1)),
                labels_for=h.class_labels(classes),
            )
            try:
                async with asyncio.timeout(timeout):
                    await fleet.start()
                ready, _ = await h.wait_ready(
                    client, BASE_BUNDLE, clusters, timeout=timeout, label=BASE_BUNDLE
                )
                if ready < clusters:
                    result["errors"].append(f"base: only {ready} of {clusters} Ready")
                    return result
                elected = (await lease_owners(kv)).get("leader")
                leader = elected if elected in replicas else REPLICAS[0]
                victim = replicas[leader]
                assert victim is not None and victim.proc is not None
                h.say(f"rollout: applying {ROLLOUT_BUNDLE}, killing {leader} (leader: {elected})")
                started = time.monotonic()
                await h.apply_bundle(client, ROLLOUT_BUNDLE, "1")
                victim.proc.send_signal(signal.SIGKILL)
                await victim.proc.wait()
                result["killed_replica"] = leader
                result["killed_was_leader"] = elected == leader
                ready, _ = await h.wait_ready(
                    client, ROLLOUT_BUNDLE, clusters, timeout=timeout, label=ROLLOUT_BUNDLE
                )
                result["seconds_to_all_ready"] = round(time.monotonic() - started, 3)
                result["ready"] = ready
                survivor = next(n for n in REPLICAS if n != leader)

                async def survivor_owns_all() -> bool:
                    owners = await lease_owners(kv)
                    shards = [v for k, v in owners.items() if k.startswith("shard-")]
                    return bool(shards) and all(v == survivor for v in shards)

                await h.wait_for(survivor_owns_all, timeout=LEASE_TTL * 4)
                owners = await lease_owners(kv)
                result["shards_owned_by_survivor"] = sum(
                    1 for k, v in owners.items() if k.startswith("shard-") and v == survivor
                )
                result["survivor_is_leader"] = owners.get("leader") == survivor
                summary = await client.admin(admin.BundleList(), admin.BundleListReply)
                states = next(b.states for b in summary.bundles if b.name == ROLLOUT_BUNDLE)
                result["final_states"] = {s.value: n for s, n in states.items()}
                if states != {State.READY: clusters}:
                    result["errors"].append(f"final states {result['final_states']}")
            finally:
                await fleet.stop()
        finally:
            await second.stop()
    return result
