"""Helm's ``valuesFrom``: values a bundle reads from the cluster it is deployed to.

A ``fleet.yaml`` may say ``helm.valuesFrom: [{configMapKeyRef: {name, namespace,
key}}, {secretKeyRef: ...}]``: values that live on each downstream cluster,
typically per-site settings or credentials that must not travel through git.
As Fleet does, each entry's ConfigMap values and then its Secret values are
deep-merged over ``helm.values`` in order (later wins); the namespace defaults
to the bundle's, the key to ``values.yaml``. A missing object or key, or text
that is not a YAML map, fails the deployment with a message naming it, and is
retried (someone may create it yet).
"""

from __future__ import annotations

from typing import Any

import yaml

from bundles.render import target_namespace
from edgeagent.backend import ClusterBackend
from edgeagent.errors import ApplyError
from protocol.models import DeploymentOptions, KeyRef, merge_values

DEFAULT_KEY = "values.yaml"


async def with_values_from(
    backend: ClusterBackend, options: DeploymentOptions
) -> DeploymentOptions:
    """``options`` with ``helm.valuesFrom`` read from the cluster and merged into the values."""
    helm = options.helm
    if helm is None or not helm.values_from:
        return options
    values: dict[str, Any] = dict(helm.values)
    namespace = target_namespace(options)
    for source in helm.values_from:
        for kind, ref in (
            ("ConfigMap", source.config_map_key_ref),
            ("Secret", source.secret_key_ref),
        ):
            if ref is not None:
                values = merge_values(values, await _read(backend, kind, ref, namespace))
    return options.model_copy(update={"helm": helm.model_copy(update={"values": values})})


async def _read(backend: ClusterBackend, kind: str, ref: KeyRef, namespace: str) -> dict[str, Any]:
    where = f"{kind} {ref.namespace or namespace}/{ref.name}"
    key = ref.key or DEFAULT_KEY
    text = await backend.read_key(kind, ref.namespace or namespace, ref.name, key)
    if text is None:
        raise ApplyError(f"helm.valuesFrom: {where} has no key {key!r} (or does not exist)")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ApplyError(f"helm.valuesFrom: {where} key {key!r} is not YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ApplyError(f"helm.valuesFrom: {where} key {key!r} is not a map of values")
    return loaded
