"""What shoal applied for each bundle, kept in the cluster itself.

One ConfigMap per bundle, ``shoal-bundle-<bundle>`` in the inventory
namespace (``shoal-system`` by default), lists the objects shoal applied for
it (apiVersion, kind, namespace, name) and the deployment ID. It lives in the
cluster rather than in the agent's state directory so that it survives the
agent being reinstalled and is visible with ``kubectl``, and so that prune
works across restarts:

* an object dropped from a bundle is in the old inventory and not the new
  one, so it is deleted;
* a bundle deleted while the agent was down still has its ConfigMap, so
  :meth:`Inventory.bundles` lists it and the reconciler removes it;
* before an apply changes anything, the inventory is widened to old + new,
  so an agent that dies half-way still knows every object it may have made.

The ConfigMap is labelled ``shoal.dev/inventory-of=<bundle>``, not with the
bundle label, so drift watches never see it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import structlog

from edgeagent.kube.apply import DEPLOYMENT_ANNOTATION, NAMESPACES, Applier, ObjectKey
from edgeagent.kube.client import KubeClient
from edgeagent.kube.discovery import Resource
from edgeagent.kube.errors import ApiError
from edgeagent.settings import AgentSettings

log = structlog.get_logger(__name__)

INVENTORY_LABEL = "shoal.dev/inventory-of"
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap", namespaced=True)
_PREFIX = "shoal-bundle-"


class Inventory:
    """The per-bundle inventory ConfigMaps; see the module docstring."""

    def __init__(self, client: KubeClient, applier: Applier, settings: AgentSettings) -> None:
        self._client = client
        self._applier = applier
        self._namespace = settings.kube_inventory_namespace
        self._namespace_ready = False

    def _path(self, bundle: str = "") -> str:
        return CONFIGMAPS.path(self._namespace, f"{_PREFIX}{bundle}" if bundle else "")

    async def read(self, bundle: str) -> set[ObjectKey]:
        """The objects recorded for ``bundle`` (empty if it has no inventory)."""
        configmap = await self._client.get(self._path(bundle))
        if configmap is None:
            return set()
        try:
            entries = json.loads((configmap.get("data") or {}).get("objects", "[]"))
            return {
                (str(e["apiVersion"]), str(e["kind"]), str(e.get("namespace", "")), str(e["name"]))
                for e in entries
            }
        except (ValueError, KeyError, TypeError) as exc:
            # Someone edited it by hand: pruning from it would guess, so prune nothing.
            log.error("kube.inventory_unreadable", bundle=bundle, error=str(exc))
            return set()

    async def write(self, bundle: str, deployment_id: str, keys: Iterable[ObjectKey]) -> None:
        await self._ensure_namespace()
        entries = [
            {"apiVersion": av, "kind": k, "namespace": ns, "name": n}
            for av, k, ns, n in sorted(set(keys))
        ]
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{_PREFIX}{bundle}",
                "namespace": self._namespace,
                "labels": {INVENTORY_LABEL: bundle},
                "annotations": {DEPLOYMENT_ANNOTATION: deployment_id},
            },
            "data": {"objects": json.dumps(entries, separators=(",", ":"))},
        }
        await self._applier.server_side_apply(CONFIGMAPS, body, force=True)

    async def delete(self, bundle: str) -> None:
        try:
            await self._client.request("DELETE", self._path(bundle))
        except ApiError as exc:
            if not exc.not_found:
                raise

    async def bundles(self) -> set[str]:
        """Every bundle with an inventory in the cluster."""
        listing = await self._client.get(self._path(), query=[("labelSelector", INVENTORY_LABEL)])
        return {
            str(item["metadata"]["labels"][INVENTORY_LABEL])
            for item in (listing or {}).get("items", [])
        }

    async def _ensure_namespace(self) -> None:
        if self._namespace_ready:
            return
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self._namespace}}
        await self._applier.server_side_apply(NAMESPACES, body, force=False)
        self._namespace_ready = True
