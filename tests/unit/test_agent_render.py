"""Rendering: namespace rules as Fleet applies them, and errors that name the file."""

from __future__ import annotations

import pytest

from bundles.templating import ClusterContext
from edgeagent.errors import RenderError
from edgeagent.render import PLACED_PER_BUNDLE, ParseCache, objects_for, render
from protocol.models import BundleResource, DeploymentOptions

MANIFESTS = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: plain
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: placed
  namespace: mine
---
apiVersion: v1
kind: Namespace
metadata:
  name: ns
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: role
"""


def namespaces(options: DeploymentOptions) -> dict[str, str | None]:
    objects = render([BundleResource(name="app.yaml", content=MANIFESTS)], options)
    return {o["metadata"]["name"]: o["metadata"].get("namespace") for o in objects}


def test_default_namespace_fills_only_missing() -> None:
    assert namespaces(DeploymentOptions()) == {
        "plain": "default",
        "placed": "mine",
        "ns": None,
        "role": None,
    }
    assert namespaces(DeploymentOptions(defaultNamespace="apps"))["plain"] == "apps"
    assert namespaces(DeploymentOptions(defaultNamespace="apps"))["placed"] == "mine"


def test_namespace_option_forces_namespaced_objects_only() -> None:
    assert namespaces(DeploymentOptions(namespace="forced")) == {
        "plain": "forced",
        "placed": "forced",
        "ns": None,
        "role": None,
    }


def test_empty_documents_and_other_files_are_skipped() -> None:
    resources = [
        BundleResource(name="a.yaml", content="---\n---\n" + MANIFESTS.split("---", maxsplit=1)[0]),
        BundleResource(name="README.md", content="not yaml: [\n"),
    ]
    assert [o["metadata"]["name"] for o in render(resources, DeploymentOptions())] == ["plain"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("kind: ConfigMap\nmetadata: {name: x}\n", "apiVersion"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "kind"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "metadata.name"),
        ("apiVersion: v1\nkind: ConfigMap\n", "metadata"),
        ("- just\n- a list\n", "mapping"),
        ("key: [unclosed\n", "invalid YAML"),
    ],
)
def test_invalid_objects_name_file_and_document(content: str, needle: str) -> None:
    good = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n"
    resources = [
        BundleResource(name="good.yaml", content=good),
        BundleResource(name="dir/bad.yaml", content=good + "---\n" + content),
    ]
    with pytest.raises(RenderError) as info:
        render(resources, DeploymentOptions())
    assert info.value.file == "dir/bad.yaml"
    assert "dir/bad.yaml" in str(info.value)
    assert needle in str(info.value)
    if needle != "invalid YAML":
        assert info.value.document == 2


async def test_agents_given_one_options_object_share_one_placement() -> None:
    cache = ParseCache()
    loaded = cache.get("m1", lambda: [BundleResource(name="app.yaml", content=MANIFESTS)])
    shared = DeploymentOptions(namespace="shop")
    context = ClusterContext(name="c1")
    first = await objects_for(loaded, shared, bundle="b", cluster=context)
    again = await objects_for(loaded, shared, bundle="b", cluster=ClusterContext(name="c2"))
    assert again is first
    assert {o["metadata"].get("namespace") for o in first if o["kind"] == "ConfigMap"} == {"shop"}
    # Other options (even equal ones) are placed for themselves, and the cache stays bounded.
    others = [DeploymentOptions(namespace=f"ns{i}") for i in range(PLACED_PER_BUNDLE + 2)]
    for options in others:
        objects = await objects_for(loaded, options, bundle="b", cluster=context)
        assert objects[0]["metadata"]["namespace"] == options.namespace
    assert len(loaded.placed) == PLACED_PER_BUNDLE
    equal = DeploymentOptions(namespace="shop")
    assert await objects_for(loaded, equal, bundle="b", cluster=context) == first
