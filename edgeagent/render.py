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
from collections.abc import Iterable
from typing import Any

from edgeagent.errors import RenderError
from protocol.manifests import ManifestError, parse_resources
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


def render(
    resources: Iterable[BundleResource], options: DeploymentOptions
) -> tuple[dict[str, Any], ...]:
    """Every object of a bundle, in file-name order, namespaces placed.

    Parsing is :func:`protocol.manifests.parse_resources`, the same code the
    control plane validates bundles with, so both sides agree on what is valid.
    """
    try:
        parsed = parse_resources(resources)
    except ManifestError as exc:
        raise RenderError(str(exc), file=exc.file, document=exc.document) from exc
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


def object_key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    """(apiVersion, kind, namespace, name): how a cluster tells objects apart."""
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])
