"""Applying bundles to an emulated cluster: create, update, order, validation, conflicts."""

from __future__ import annotations

import base64
from typing import Any

import kmock
import pytest

from edgeagent.kube.backend import KubeBackend
from edgeagent.kube.errors import ApplyRefused
from tests.integration.kube.conftest import configmap, deployment, deployment_obj
from tests.integration.kube.emulator import ApiServer

pytestmark = pytest.mark.kube


def crd(
    group: str = "example.com", kind: str = "Widget", plural: str = "widgets"
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }


def widget(name: str, namespace: str = "default", size: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"size": size},
    }


def negative_replicas(obj: dict[str, Any]) -> str | None:
    replicas = (obj.get("spec") or {}).get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        return f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
    return None


async def test_apply_creates_objects_labelled_with_bundle_and_deployment(
    api: ApiServer, backend: KubeBackend
) -> None:
    await backend.apply(
        deployment(
            "web", deployment_obj("web"), configmap("web-config", a="1"), deployment_id="m:1"
        )
    )

    live = api.get("apps/v1/deployments", "default", "web")
    assert live is not None
    assert live["spec"]["replicas"] == 2
    assert live["metadata"]["labels"]["shoal.dev/bundle"] == "web"
    assert live["metadata"]["annotations"]["shoal.dev/deployment-id"] == "m:1"
    assert [m["manager"] for m in live["metadata"]["managedFields"]] == ["shoal"]
    assert api.get("v1/configmaps", "default", "web-config") is not None
    inventory = api.get("v1/configmaps", "shoal-system", "shoal-bundle-web")
    assert inventory is not None and "web-config" in inventory["data"]["objects"]


async def test_apply_updates_changed_fields_and_keeps_unchanged_objects_untouched(
    api: ApiServer, backend: KubeBackend
) -> None:
    await backend.apply(deployment("web", deployment_obj("web"), configmap("cfg", a="1")))
    cfg_version = api.get("v1/configmaps", "default", "cfg")["metadata"]["resourceVersion"]  # type: ignore[index]

    await backend.apply(
        deployment(
            "web", deployment_obj("web", replicas=5), configmap("cfg", a="1"), deployment_id="m:2"
        )
    )

    live = api.get("apps/v1/deployments", "default", "web")
    assert live is not None and live["spec"]["replicas"] == 5
    assert live["metadata"]["generation"] == 2
    cfg = api.get("v1/configmaps", "default", "cfg")
    assert cfg is not None
    assert cfg["metadata"]["annotations"]["shoal.dev/deployment-id"] == "m:2"
    assert cfg["metadata"]["resourceVersion"] != cfg_version  # annotation moved on


async def test_namespaces_the_bundle_uses_are_created(api: ApiServer, backend: KubeBackend) -> None:
    await backend.apply(deployment("shop", configmap("cfg", namespace="shop-a", a="1")))

    assert api.get("v1/namespaces", "", "shop-a") is not None
    assert api.get("v1/configmaps", "shop-a", "cfg") is not None


async def test_namespace_option_places_objects_and_declared_namespace_goes_first(
    api: ApiServer, backend: KubeBackend
) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    await backend.apply(deployment("team", namespace, configmap("cfg", namespace="team", a="1")))

    ns = api.get("v1/namespaces", "", "team")
    assert ns is not None and ns["metadata"]["labels"]["shoal.dev/bundle"] == "team"
    assert api.get("v1/configmaps", "team", "cfg") is not None


async def test_namespace_labels_and_annotations_go_on_the_target_namespace(
    api: ApiServer, backend: KubeBackend
) -> None:
    """Fleet's namespaceLabels/namespaceAnnotations, on a namespace shoal creates or declares."""
    labels = {"team": "payments"}
    annotations = {"owner": "till@example.com"}
    await backend.apply(
        deployment(
            "pay",
            configmap("cfg", namespace="pay", a="1"),
            namespace="pay",
            namespace_labels=labels,
            namespace_annotations=annotations,
        )
    )
    created = api.get("v1/namespaces", "", "pay")
    assert created is not None
    assert created["metadata"]["labels"]["team"] == "payments"
    assert created["metadata"]["annotations"]["owner"] == "till@example.com"

    declared = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}}
    await backend.apply(
        deployment("ops", declared, namespace="ops", namespace_labels=labels, deployment_id="m2:o1")
    )
    ns = api.get("v1/namespaces", "", "ops")
    assert ns is not None
    assert ns["metadata"]["labels"]["team"] == "payments"
    assert ns["metadata"]["labels"]["shoal.dev/bundle"] == "ops"
    assert (
        await backend.observe(
            deployment(
                "ops", declared, namespace="ops", namespace_labels=labels, deployment_id="m2:o1"
            )
        )
    ).state.value != "Modified"


async def test_crd_is_applied_and_established_before_its_custom_resources(
    api: ApiServer, backend: KubeBackend
) -> None:
    api.crd_delay = 0.3
    # Bundle order puts the custom resource first; it must still wait for its CRD.
    await backend.apply(deployment("widgets", widget("w1", size=3), crd()))

    live = api.get("example.com/v1/widgets", "default", "w1")
    assert live is not None and live["spec"]["size"] == 3
    applies = [r for r in api._requests if r.method == "PATCH" and "dryRun" not in r.params]
    order = [
        r.url.path for r in applies if "example.com" in r.url.path or "/widgets/" in r.url.path
    ]
    assert order[0].endswith("/customresourcedefinitions/widgets.example.com")
    assert order[-1].endswith("/namespaces/default/widgets/w1")


async def test_dry_run_refusal_applies_nothing_and_names_every_refused_object(
    api: ApiServer, backend: KubeBackend
) -> None:
    api.validators.append(negative_replicas)
    bad = [deployment_obj("a", replicas=-1), deployment_obj("b", replicas=-2)]

    with pytest.raises(ApplyRefused) as caught:
        await backend.apply(deployment("bad", configmap("fine", a="1"), *bad))

    assert not caught.value.transient
    reasons = {c.name: c.reason for c in caught.value.conditions}
    assert set(reasons) == {"a", "b"}
    assert 'Deployment.apps "a" is invalid: spec.replicas: Invalid value: -1' in reasons["a"]
    assert "refused 2 of 3 objects" in str(caught.value)
    assert api.get("v1/configmaps", "default", "fine") is None
    assert api.get("v1/configmaps", "shoal-system", "shoal-bundle-bad") is None
    assert not any(r.method == "PATCH" and "dryRun" not in r.params for r in api._requests)


async def test_object_in_new_namespace_is_validated_before_the_rest_is_applied(
    api: ApiServer, backend: KubeBackend
) -> None:
    api.validators.append(negative_replicas)

    with pytest.raises(ApplyRefused) as caught:
        await backend.apply(
            deployment("n", configmap("cfg", a="1"), deployment_obj("x", "fresh", replicas=-1))
        )

    assert [c.name for c in caught.value.conditions] == ["x"]
    assert api.get("v1/configmaps", "default", "cfg") is None
    assert api.get("apps/v1/deployments", "fresh", "x") is None


async def test_conflict_with_another_field_manager_is_reported_not_overwritten(
    api: ApiServer, backend: KubeBackend
) -> None:
    await backend.apply(deployment("web", deployment_obj("web", replicas=2)))
    await api.edit(
        "apps/v1/deployments", "default", "web", {"spec": {"replicas": 7}}, manager="hpa"
    )

    with pytest.raises(ApplyRefused) as caught:
        await backend.apply(
            deployment("web", deployment_obj("web", replicas=3), deployment_id="m:2")
        )

    (condition,) = caught.value.conditions
    assert (condition.kind, condition.name) == ("Deployment", "web")
    assert 'conflict with "hpa"' in condition.reason and ".spec.replicas" in condition.reason
    assert "force" in condition.reason
    assert api.get("apps/v1/deployments", "default", "web")["spec"]["replicas"] == 7  # type: ignore[index]


async def test_force_takes_over_fields_of_another_manager(
    api: ApiServer, backend: KubeBackend
) -> None:
    await backend.apply(deployment("web", deployment_obj("web", replicas=2)))
    await api.edit(
        "apps/v1/deployments", "default", "web", {"spec": {"replicas": 7}}, manager="hpa"
    )

    await backend.apply(
        deployment("web", deployment_obj("web", replicas=3), deployment_id="m:2", force=True)
    )

    live = api.get("apps/v1/deployments", "default", "web")
    assert live is not None and live["spec"]["replicas"] == 3


async def test_unknown_kind_is_refused_with_a_condition(
    api: ApiServer, backend: KubeBackend
) -> None:
    with pytest.raises(ApplyRefused) as caught:
        await backend.apply(deployment("w", widget("w1"), configmap("cfg", a="1")))

    (condition,) = caught.value.conditions
    assert condition.reason == "the cluster serves no kind Widget in example.com/v1"
    assert caught.value.transient  # a CRD may be installed later
    assert api.get("v1/configmaps", "default", "cfg") is None


async def test_server_errors_are_transient_and_name_the_object(
    api: ApiServer, backend: KubeBackend
) -> None:
    api["patch", kmock.resource("apps/v1/deployments")] << kmock.KubernetesError(
        status=503, reason="ServiceUnavailable", message="etcd is overloaded"
    )

    with pytest.raises(ApplyRefused) as caught:
        await backend.apply(deployment("web", deployment_obj("web")))

    assert caught.value.transient
    assert caught.value.conditions[0].reason == "etcd is overloaded"


async def test_read_key_gives_configmap_and_decoded_secret_values(backend: KubeBackend) -> None:
    """What helm.valuesFrom reads on the cluster; absent objects and keys are None."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default"},
        "data": {"values.yaml": base64.b64encode(b"token: s3cret\n").decode()},
    }
    await backend.apply(deployment("site", secret, configmap("site", **{"values.yaml": "a: 1"})))

    assert await backend.read_key("Secret", "default", "creds", "values.yaml") == "token: s3cret\n"
    assert await backend.read_key("ConfigMap", "default", "site", "values.yaml") == "a: 1"
    assert await backend.read_key("ConfigMap", "default", "site", "other") is None
    assert await backend.read_key("Secret", "default", "nothere", "values.yaml") is None


async def test_bundles_sharing_a_namespace_keep_each_others_namespace_labels(
    api: ApiServer, backend: KubeBackend
) -> None:
    for bundle, labels in (("a", {"team": "payments"}), ("b", {"env": "prod"})):
        await backend.apply(
            deployment(
                bundle,
                configmap(f"cfg-{bundle}", namespace="shared", a="1"),
                namespace="shared",
                namespace_labels=labels,
                deployment_id=f"m-{bundle}:o1",
            )
        )

    ns = api.get("v1/namespaces", "", "shared")
    assert ns is not None
    assert {"team": "payments", "env": "prod"}.items() <= ns["metadata"]["labels"].items()


async def test_capabilities_are_the_servers_version_and_group_versions(
    backend: KubeBackend,
) -> None:
    caps = await backend.capabilities()
    assert caps.kube_version is not None and caps.kube_version.startswith("v1.")
    assert "+" not in caps.kube_version  # "v1.26.4+k3s1" is v1.26.4 to Helm
    assert {"v1", "apps/v1"} <= set(caps.api_versions)
