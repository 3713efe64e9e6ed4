"""Drift watches, and the reconciler on the Kubernetes backend: Modified at once, corrected."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from edgeagent.blobs import Blobs
from edgeagent.kube.backend import KubeBackend
from edgeagent.membus import MemoryBus
from edgeagent.reconciler import Reconciler
from edgeagent.settings import AgentSettings
from edgeagent.store import MemoryBlobCache
from protocol.codec import encode_resources
from protocol.ids import deployment_id, manifest_id
from protocol.messages import BundleStatus, DesiredBundle
from protocol.models import BundleResource, DeploymentOptions
from protocol.states import State
from tests.integration.kube.conftest import configmap, deployment, deployment_obj, eventually
from tests.integration.kube.emulator import ApiServer

pytestmark = pytest.mark.kube


async def test_watch_reports_an_edit_once_per_burst_and_ignores_own_applies(
    api: ApiServer, backend: KubeBackend
) -> None:
    pokes: list[str] = []
    backend.on_drift = pokes.append
    web = deployment("web", configmap("cfg", a="1"), configmap("other", b="1"))
    await backend.apply(web)
    await backend.apply(web)
    await asyncio.sleep(0.2)
    assert pokes == []  # shoal's own applies echo back unchanged

    for value in ("2", "3", "4"):
        await api.edit("v1/configmaps", "default", "cfg", {"data": {"a": value}}, manager="ed")
    await api.remove("v1/configmaps", "default", "other")

    await eventually(lambda: _true(pokes))
    await asyncio.sleep(0.2)
    assert pokes == ["web"]


async def test_status_churn_wakes_nobody(api: ApiServer, backend: KubeBackend) -> None:
    pokes: list[str] = []
    backend.on_drift = pokes.append
    await backend.apply(deployment("web", configmap("cfg", a="1")))
    await asyncio.sleep(0.1)

    for n in range(3):
        await api.set_status("v1/configmaps", "default", "cfg", {"seen": n})
    await asyncio.sleep(0.2)

    assert pokes == []


async def test_watch_lists_again_after_410_gone_and_still_sees_drift(
    api: ApiServer, backend: KubeBackend
) -> None:
    pokes: list[str] = []
    backend.on_drift = pokes.append
    await backend.apply(deployment("web", configmap("cfg", a="1")))
    await eventually(lambda: _true(backend.watch.relists))
    before = backend.watch.relists

    # An edit the watch never streams: the server forgets its history (410 Gone for
    # the watch's resourceVersion) and drops the connections in the same instant.
    await api.edit("v1/configmaps", "default", "cfg", {"data": {"a": "2"}}, manager="ed")
    api.compact()
    api.drop_watches()

    await eventually(lambda: _true(backend.watch.relists > before))
    await eventually(lambda: _true(pokes == ["web"]))


async def _true(value: Any) -> bool:
    return bool(value)


# --- the reconciler on the Kubernetes backend -----------------------------------------


class Fleet:
    """One reconciler driving the backend, with bundles fed as the bus would."""

    def __init__(self, backend: KubeBackend) -> None:
        self.bus = MemoryBus()
        settings = AgentSettings(
            status_interval=0.02,
            retry_initial=0.05,
            retry_max=0.2,
            observe_interval=3600,  # only a drift watch can make it look again
            observe_interval_not_ready=0.05,
        )
        self.reconciler = Reconciler(
            backend=backend,
            blobs=Blobs(MemoryBlobCache(), self.bus, timeout=1.0),
            settings=settings,
        )
        backend.on_drift = self.reconciler.poke

    def desire(self, name: str, objects: list[dict[str, Any]], **options: Any) -> None:
        resources = [BundleResource(name="all.yaml", content=yaml.safe_dump_all(objects))]
        manifest = manifest_id(resources)
        self.bus.blobs[manifest] = encode_resources(resources)
        opts = DeploymentOptions(**options)
        message = DesiredBundle(
            bundle=name, rev=1, deployment_id=deployment_id(manifest, opts), options=opts
        )
        self.reconciler.set_desired({name: message})

    def status(self, name: str) -> BundleStatus | None:
        return next((s for s in self.reconciler.statuses() if s.bundle == name), None)

    async def until(self, name: str, state: State, timeout: float = 5.0) -> BundleStatus:
        async def reached() -> bool:
            status = self.status(name)
            return status is not None and status.state == state

        await eventually(reached, timeout)
        status = self.status(name)
        assert status is not None
        return status


@pytest.fixture
async def fleet(backend: KubeBackend) -> AsyncIterator[Fleet]:
    world = Fleet(backend)
    task = asyncio.create_task(world.reconciler.run())
    try:
        yield world
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_drift_shows_as_modified_at_once_without_correct_drift(
    api: ApiServer, fleet: Fleet
) -> None:
    fleet.desire("web", [configmap("cfg", a="1")])
    await fleet.until("web", State.READY)

    await api.edit("v1/configmaps", "default", "cfg", {"data": {"a": "x"}}, manager="ed")

    status = await fleet.until("web", State.MODIFIED, timeout=2.0)
    assert [(c.name, c.reason) for c in status.modified] == [("cfg", "modified: data.a")]
    assert api.get("v1/configmaps", "default", "cfg")["data"]["a"] == "x"  # type: ignore[index]


async def test_correct_drift_recreates_a_deleted_object(api: ApiServer, fleet: Fleet) -> None:
    fleet.desire("web", [configmap("cfg", a="1"), configmap("other", b="1")], correctDrift=True)
    await fleet.until("web", State.READY)

    await api.remove("v1/configmaps", "default", "other")

    async def recreated() -> bool:
        return api.get("v1/configmaps", "default", "other") is not None

    await eventually(recreated, timeout=3.0)
    await fleet.until("web", State.READY)


async def test_correct_drift_with_force_takes_back_a_field_another_manager_took(
    api: ApiServer, fleet: Fleet
) -> None:
    fleet.desire("web", [deployment_obj("web", replicas=2)], correctDrift=True, force=True)
    await fleet.until("web", State.NOT_READY)

    await api.edit("apps/v1/deployments", "default", "web", {"spec": {"replicas": 0}}, manager="x")

    async def corrected() -> bool:
        live = api.get("apps/v1/deployments", "default", "web")
        return bool(live and live["spec"]["replicas"] == 2)

    await eventually(corrected, timeout=3.0)


async def test_correct_drift_takes_back_an_edited_field_without_force(
    api: ApiServer, fleet: Fleet
) -> None:
    fleet.desire("web", [configmap("cfg", a="1")], correctDrift=True)
    await fleet.until("web", State.READY)

    await api.edit("v1/configmaps", "default", "cfg", {"data": {"a": "x"}}, manager="kubectl-edit")

    async def corrected() -> bool:
        live = api.get("v1/configmaps", "default", "cfg")
        return bool(live and live["data"]["a"] == "1")

    await eventually(corrected, timeout=3.0)
    await fleet.until("web", State.READY)
    managers = [
        m["manager"]
        for m in api.get("v1/configmaps", "default", "cfg")["metadata"]["managedFields"]
    ]  # type: ignore[index]
    assert managers == ["shoal"]


async def test_without_correct_drift_an_edit_stays_modified(api: ApiServer, fleet: Fleet) -> None:
    fleet.desire("web", [deployment_obj("web", replicas=2)])
    await fleet.until("web", State.NOT_READY)

    await api.edit("apps/v1/deployments", "default", "web", {"spec": {"replicas": 0}}, manager="x")

    status = await fleet.until("web", State.MODIFIED, timeout=3.0)
    assert status.modified[0].reason == "modified: spec.replicas"
    await asyncio.sleep(0.3)
    assert api.get("apps/v1/deployments", "default", "web")["spec"]["replicas"] == 0  # type: ignore[index]
