"""The inventory: pruning dropped objects, removing bundles, keepResources, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeagent.kube.backend import KubeBackend
from edgeagent.kube.errors import ApplyRefused
from edgeagent.settings import AgentSettings
from tests.integration.kube.conftest import configmap, deployment, deployment_obj
from tests.integration.kube.emulator import ApiServer

pytestmark = pytest.mark.kube


async def test_object_dropped_from_bundle_is_pruned(api: ApiServer, backend: KubeBackend) -> None:
    await backend.apply(deployment("web", deployment_obj("web"), configmap("old", a="1")))

    await backend.apply(deployment("web", deployment_obj("web"), deployment_id="m:2"))

    assert api.get("v1/configmaps", "default", "old") is None
    assert api.get("apps/v1/deployments", "default", "web") is not None
    inventory = api.get("v1/configmaps", "shoal-system", "shoal-bundle-web")
    assert inventory is not None and "old" not in inventory["data"]["objects"]


async def test_removed_bundle_objects_and_inventory_are_deleted(
    api: ApiServer, backend: KubeBackend
) -> None:
    await backend.apply(deployment("web", deployment_obj("web"), configmap("cfg", a="1")))
    await backend.apply(deployment("other", configmap("keep-me", a="1")))

    await backend.remove("web", keep_resources=False)

    assert api.get("apps/v1/deployments", "default", "web") is None
    assert api.get("v1/configmaps", "default", "cfg") is None
    assert api.get("v1/configmaps", "default", "keep-me") is not None
    assert await backend.deployed_bundles() == {"other"}


async def test_keep_resources_leaves_objects_but_forgets_the_bundle(
    api: ApiServer, backend: KubeBackend
) -> None:
    await backend.apply(deployment("web", deployment_obj("web"), keep_resources=True))

    await backend.remove("web", keep_resources=True)

    assert api.get("apps/v1/deployments", "default", "web") is not None
    assert await backend.deployed_bundles() == set()


async def test_objects_without_shoals_label_are_never_deleted(
    api: ApiServer, backend: KubeBackend
) -> None:
    await backend.apply(deployment("web", configmap("shared", a="1"), configmap("mine", a="1")))
    # Someone deletes shoal's object and creates their own under the same name.
    await api.remove("v1/configmaps", "default", "shared")
    await api.put("v1/configmaps", "default", "shared", configmap("shared", owner="ops"))
    # And someone moves another object away from the bundle.
    await api.edit(
        "v1/configmaps",
        "default",
        "mine",
        {"metadata": {"labels": {"shoal.dev/bundle": "not-web"}}},
        manager="kubectl-edit",
    )

    await backend.remove("web", keep_resources=False)

    assert api.get("v1/configmaps", "default", "shared") is not None
    assert api.get("v1/configmaps", "default", "mine") is not None


async def test_implicit_namespace_is_not_deleted_with_the_bundle(
    api: ApiServer, backend: KubeBackend
) -> None:
    await backend.apply(deployment("shop", configmap("cfg", namespace="shop-a", a="1")))

    await backend.remove("shop", keep_resources=False)

    assert api.get("v1/configmaps", "shop-a", "cfg") is None
    assert api.get("v1/namespaces", "", "shop-a") is not None  # may hold others' objects


async def test_delete_namespace_deletes_only_a_namespace_shoal_created_for_the_bundle(
    api: ApiServer, backend: KubeBackend
) -> None:
    """Fleet's deleteNamespace, without ever deleting a namespace shoal found."""
    await backend.apply(deployment("pop", configmap("cfg", namespace="popup", a="1")))
    other = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "theirs"}}
    await backend.apply(deployment("ns-owner", other))
    await backend.remove("ns-owner", keep_resources=True)  # now a namespace shoal did not make
    await backend.apply(deployment("guest", configmap("cfg", namespace="theirs", a="1")))

    await backend.remove("pop", keep_resources=False, delete_namespace="popup")
    await backend.remove("guest", keep_resources=False, delete_namespace="theirs")

    assert api.get("v1/namespaces", "", "popup") is None
    assert api.get("v1/namespaces", "", "theirs") is not None
    assert api.get("v1/configmaps", "theirs", "cfg") is None


async def test_a_new_agent_finds_deployed_bundles_and_prunes_across_restart(
    api: ApiServer, kubeconfig: Path, kube_settings: AgentSettings
) -> None:
    async with await KubeBackend.connect(kubeconfig, settings=kube_settings) as first:
        await first.apply(deployment("web", deployment_obj("web"), configmap("old", a="1")))
        await first.apply(deployment("gone", configmap("gone-cfg", a="1")))

    async with await KubeBackend.connect(kubeconfig, settings=kube_settings) as second:
        assert await second.deployed_bundles() == {"web", "gone"}
        await second.apply(deployment("web", deployment_obj("web"), deployment_id="m:2"))
        await second.remove("gone", keep_resources=False)

    assert api.get("v1/configmaps", "default", "old") is None
    assert api.get("v1/configmaps", "default", "gone-cfg") is None
    assert api.names("v1/configmaps") >= {("shoal-system", "shoal-bundle-web")}
    assert ("shoal-system", "shoal-bundle-gone") not in api.names("v1/configmaps")


async def test_inventory_is_widened_before_apply_so_a_crash_loses_nothing(
    api: ApiServer, backend: KubeBackend
) -> None:
    await backend.apply(deployment("web", configmap("a", x="1")))
    # The next apply fails half-way, after the dry run passed, as a crash would leave it.
    api.failing["c"] = "etcd timeout"
    with pytest.raises(ApplyRefused, match="etcd timeout"):
        await backend.apply(
            deployment("web", configmap("b", x="1"), configmap("c", x="1"), deployment_id="m:2")
        )

    inventory = api.get("v1/configmaps", "shoal-system", "shoal-bundle-web")
    assert inventory is not None
    for name in ("a", "b", "c"):
        assert f'"name":"{name}"' in inventory["data"]["objects"]
