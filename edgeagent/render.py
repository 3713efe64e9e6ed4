"""Rendering: a bundle's resource files -> the Kubernetes objects to apply.

Rendering happens at the edge, per cluster. For now resources are plain YAML
manifests (one or more documents per file, ``*.yaml``/``*.yml``); namespaces follow Fleet's rules:
``namespace`` forces the namespace of every namespaced object,
``defaultNamespace`` (else ``default``) fills in objects that name none, and
cluster-scoped kinds are left alone. Any invalid object rejects the whole
bundle (invariant 5) with an error naming the file and the document.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from edgeagent.errors import RenderError
from protocol.manifests import ManifestError, ParsedObject, parse_resources
from protocol.models import BundleResource, DeploymentOptions

DEFAULT_NAMESPACE = "default"

CLUSTER_SCOPED_KINDS: frozenset[str] = frozenset(
    {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "APIService",
    }
)


def _place(obj: dict[str, Any], options: DeploymentOptions) -> dict[str, Any]:
    if obj["kind"] in CLUSTER_SCOPED_KINDS:
        return obj
    meta = obj["metadata"]
    if options.namespace:
        meta["namespace"] = options.namespace
    elif not meta.get("namespace"):
        meta["namespace"] = options.default_namespace or DEFAULT_NAMESPACE
    return obj


def parse(resources: Iterable[BundleResource]) -> tuple[ParsedObject, ...]:
    """The bundle's objects as parsed, before placement; RenderError names the file."""
    try:
        return tuple(parse_resources(resources))
    except ManifestError as exc:
        raise RenderError(str(exc), file=exc.file, document=exc.document) from exc


def render(
    resources: Iterable[BundleResource], options: DeploymentOptions
) -> tuple[dict[str, Any], ...]:
    """Every object of a bundle, in file-name order, namespaces placed.

    Parsing is :func:`protocol.manifests.parse_resources`, the same code the
    control plane validates bundles with, so both sides agree on what is valid.
    """
    return place(parse(resources), options)


def place(parsed: Iterable[ParsedObject], options: DeploymentOptions) -> tuple[dict[str, Any], ...]:
    """Copies of parsed objects with their namespaces placed for these options."""
    objects: list[dict[str, Any]] = []
    for item in parsed:
        obj = copy.deepcopy(item.obj)
        namespace = obj["metadata"].get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise RenderError(
                f"{item.file} (document {item.document}): metadata.namespace must be a string",
                file=item.file,
                document=item.document,
            )
        objects.append(_place(obj, options))
    return tuple(objects)


class ParseCache:
    """Parsed objects by manifest ID, so a deployment is parsed once per process.

    One agent parses each deployment once anyway; a simulated fleet shares one
    cache among its agents, as many real clusters would each parse once in
    parallel. Bounded: the oldest entries go first.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: dict[str, tuple[ParsedObject, ...]] = {}

    def get(
        self, manifest_id: str, resources: Callable[[], list[BundleResource]]
    ) -> tuple[ParsedObject, ...]:
        parsed = self._entries.get(manifest_id)
        if parsed is None:
            parsed = parse(resources())
            if len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            self._entries[manifest_id] = parsed
        return parsed


def object_key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    """(apiVersion, kind, namespace, name): how a cluster tells objects apart."""
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])
