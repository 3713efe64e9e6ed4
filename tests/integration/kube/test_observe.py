"""Observing applied bundles: readiness from live status, drift from edits and deletions."""

from __future__ import annotations

from typing import Any

import pytest

from edgeagent.kube.backend import KubeBackend
from protocol.states import State
from tests.integration.kube.conftest import (
    configmap,
    deployment,
    deployment_obj,
    rolled_out,
)
from tests.integration.kube.emulator import ApiServer

pytestmark = pytest.mark.kube


def pvc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


async def test_not_ready_until_the_controller_reports_the_rollout(
    api: ApiServer, backend: KubeBackend
) -> None:
    web = deployment("web", deployment_obj("web", replicas=3), configmap("cfg", a="1"))
    await backend.apply(web)

    seen = await backend.observe(web)
    assert seen.state == State.NOT_READY
    (condition,) = seen.non_ready
    assert (condition.kind, condition.name) == ("Deployment", "web")

    half = {**rolled_out(3), "updatedReplicas": 1, "availableReplicas": 1, "readyReplicas": 1}
    await api.set_status("apps/v1/deployments", "default", "web", half)
    seen = await backend.observe(web)
    assert seen.state == State.NOT_READY
    assert "1 of 3" in seen.non_ready[0].reason

    await api.set_status("apps/v1/deployments", "default", "web", rolled_out(3))
    assert (await backend.observe(web)).state == State.READY


async def test_pending_claim_is_not_ready_and_bound_claim_is(
    api: ApiServer, backend: KubeBackend
) -> None:
    claim = deployment("data", pvc("data"))
    await backend.apply(claim)
    await api.set_status("v1/persistentvolumeclaims", "default", "data", {"phase": "Pending"})
    seen = await backend.observe(claim)
    assert seen.state == State.NOT_READY and "Pending" in seen.non_ready[0].reason

    await api.set_status("v1/persistentvolumeclaims", "default", "data", {"phase": "Bound"})
    assert (await backend.observe(claim)).state == State.READY


async def test_edited_object_is_modified_with_the_field_in_the_reason(
    api: ApiServer, backend: KubeBackend
) -> None:
    web = deployment("web", deployment_obj("web"), configmap("cfg", a="1"))
    await backend.apply(web)
    await api.set_status("apps/v1/deployments", "default", "web", rolled_out(2))

    await api.edit("v1/configmaps", "default", "cfg", {"data": {"a": "2"}}, manager="kubectl-edit")

    seen = await backend.observe(web)
    assert seen.state == State.MODIFIED
    (condition,) = seen.modified
    assert (condition.kind, condition.name, condition.namespace) == ("ConfigMap", "cfg", "default")
    assert condition.reason == "modified: data.a"


async def test_deleted_object_is_modified(api: ApiServer, backend: KubeBackend) -> None:
    web = deployment("web", configmap("cfg", a="1"), configmap("other", b="1"))
    await backend.apply(web)

    await api.remove("v1/configmaps", "default", "other")

    seen = await backend.observe(web)
    assert seen.state == State.MODIFIED
    assert [(c.name, c.reason) for c in seen.modified] == [("other", "deleted")]


async def test_compare_patches_hide_a_field_another_controller_owns(
    api: ApiServer, backend: KubeBackend
) -> None:
    diff = {
        "comparePatches": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "web",
                "namespace": "default",
                "operations": [{"op": "remove", "path": "/spec/replicas"}],
            }
        ]
    }
    web = deployment("web", deployment_obj("web"), diff=diff)
    await backend.apply(web)
    await api.edit(
        "apps/v1/deployments", "default", "web", {"spec": {"replicas": 9}}, manager="hpa"
    )
    await api.set_status("apps/v1/deployments", "default", "web", rolled_out(9, generation=2))

    assert (await backend.observe(web)).state == State.READY

    await api.edit(
        "apps/v1/deployments",
        "default",
        "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "evil:1"}]}}}},
        manager="kubectl-edit",
    )
    seen = await backend.observe(web)
    assert seen.state == State.MODIFIED
    assert "image" in seen.modified[0].reason and "replicas" not in seen.modified[0].reason


async def test_unchanged_cluster_stays_ready_across_observations_and_status_churn(
    api: ApiServer, backend: KubeBackend
) -> None:
    web = deployment("web", deployment_obj("web"), configmap("cfg", a="1"))
    await backend.apply(web)
    states = []
    for round_ in range(5):
        available = {"type": "Available", "status": "True", "lastUpdateTime": f"t{round_}"}
        status = {**rolled_out(2), "conditions": [available]}
        await api.set_status("apps/v1/deployments", "default", "web", status)
        await backend.apply(web)  # a re-apply of the same deployment changes nothing
        states.append((await backend.observe(web)).state)

    assert states == [State.READY] * 5


def ingress(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}},
    }


async def test_ignore_conditions_leave_a_condition_out_of_readiness(
    api: ApiServer, backend: KubeBackend
) -> None:
    """Fleet's ignore.conditions: a controller's condition the operator chose not to wait for."""
    waiting = {"conditions": [{"type": "Ready", "status": "False", "reason": "NoAddress"}]}
    strict = deployment("edge", ingress("edge"))
    await backend.apply(strict)
    await api.set_status("networking.k8s.io/v1/ingresses", "default", "edge", waiting)
    seen = await backend.observe(strict)
    assert seen.state == State.NOT_READY and seen.non_ready[0].name == "edge"

    lenient = deployment(
        "edge",
        ingress("edge"),
        deployment_id="m1:o2",
        ignore={"conditions": ({"type": "Ready", "status": "False"},)},
    )
    await backend.apply(lenient)
    await api.set_status("networking.k8s.io/v1/ingresses", "default", "edge", waiting)
    assert (await backend.observe(lenient)).state == State.READY
