"""Rollout cost follows label classes, not clusters (invariant 1).

1,000 simulated clusters (the real agent code with the simulated backend,
sharing two NATS connections) fall into 4 label classes; one bundle applied
to all of them must cost the control plane at most 4 desired-state messages,
and every cluster must still converge to Ready.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client
from nats.aio.msg import Msg

from controlplane.server import ControlPlane
from edgeagent.settings import AgentSettings
from edgeagent.simfleet import SimulatedFleet
from protocol import admin, subjects
from protocol.states import State
from tests.integration import cp_helpers as h

CLUSTERS = 1000


def labels_for(index: int) -> dict[str, str]:
    return {
        "env": ("prod", "dev")[index % 2],
        "region": ("eu", "us")[(index // 2) % 2],
        "shop": f"{index:05d}",  # read by no target: must not split classes
    }


async def test_thousand_clusters_in_four_classes_cost_four_publishes(
    control_plane: ControlPlane, nc: Client
) -> None:
    token = await h.create_token(nc)
    settings = AgentSettings(status_interval=0.5, heartbeat_interval=2.0)
    # A first bundle makes env and region part of the schema: 4 classes.
    base = await h.apply_bundle(
        nc, "base", h.resources("0"), targets=["env in (prod,dev),region in (eu,us)"]
    )
    assert isinstance(base, admin.BundleApplied)

    async with SimulatedFleet(
        count=CLUSTERS,
        token=token,
        settings=settings,
        url=control_plane.url,
        connections=2,
        labels_for=labels_for,
    ) as fleet:
        assert not fleet.failed
        assert len(control_plane.fleet.registry.classes) == 4

        published: list[Msg] = []

        async def collect(msg: Msg) -> None:
            published.append(msg)

        sub = await nc.subscribe(f"{subjects.PREFIX}.desired.*.web", cb=collect)
        before = control_plane.fleet.publisher.publishes
        reply = await h.apply_bundle(nc, "web", h.resources("1"))
        assert isinstance(reply, admin.BundleApplied)
        await nc.flush()

        deadline = time.monotonic() + 60
        while True:
            summary = (await h.bundles(nc))["web"]
            if summary.states.get(State.READY, 0) == CLUSTERS:
                break
            assert time.monotonic() < deadline, f"not converged: {summary.states}"
            await asyncio.sleep(0.25)

        await sub.unsubscribe()
        assert len(published) <= 4
        assert control_plane.fleet.publisher.publishes - before <= 4
        assert fleet.ready_count() == CLUSTERS
