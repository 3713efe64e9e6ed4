"""The Kubernetes backend: a :class:`edgeagent.backend.ClusterBackend` for a real cluster.

It wires the pieces of this package to the four backend methods:

* ``apply``: plan and dry-run (:mod:`.apply`), widen the inventory
  (:mod:`.inventory`), apply Namespaces and CRDs then the rest, prune what
  the bundle dropped, record the new inventory, and watch the kinds applied;
* ``remove``: delete what the inventory lists (unless ``keepResources``),
  then the inventory;
* ``observe``: read every applied object; any drift (:mod:`.drift`) makes the
  deployment Modified with one condition per object naming the fields,
  otherwise readiness (:mod:`.readiness`) makes it Ready or NotReady;
* ``deployed_bundles``: the bundles that have an inventory.

A conflict with another field manager refuses the apply unless the bundle
sets ``force`` or ``correctDrift``. Someone who edits a field takes its
ownership, so drift correction that did not force could never undo an edit;
Fleet's correctDrift undoes edits, and so does shoal's: with it, the
bundle's manifest wins over every other manager.

Deletion only ever touches an object that carries ``shoal.dev/bundle`` with
this bundle's name, and only the exact object read (uid precondition), so an
object someone else made, or re-made, under the same name survives.

Drift watches (:mod:`.watch`) report every change to shoal's objects; the
backend checks each against what it applied and, when an object's verdict
(drifted or not, ready or not) changes, calls ``on_drift(bundle)`` after
``kube_drift_debounce`` seconds, so the reconciler observes at once instead
of at its next interval. Events that change nothing shoal cares about (its
own applies echoed back, status churn) wake nobody.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from edgeagent.backend import Capabilities, Deployment, Observation, condition_of
from edgeagent.kube import drift, readiness
from edgeagent.kube.apply import (
    BUNDLE_LABEL,
    CRDS,
    CREATED_FOR_LABEL,
    NAMESPACES,
    Applier,
    Item,
    ObjectKey,
    key_of,
)
from edgeagent.kube.client import KubeClient
from edgeagent.kube.discovery import Discovery, Resource
from edgeagent.kube.errors import ApiError
from edgeagent.kube.inventory import CONFIGMAPS, Inventory
from edgeagent.kube.watch import DriftWatch
from edgeagent.settings import AgentSettings
from protocol.messages import ResourceCondition
from protocol.models import ComparePatch
from protocol.states import State

log = structlog.get_logger(__name__)

SECRETS = Resource("", "v1", "secrets", "Secret", namespaced=True)

# (drifted, ready) of one live object
_Verdict = tuple[bool, bool]


@dataclass
class _Applied:
    deployment_id: str
    compare_patches: tuple[ComparePatch, ...]
    items: dict[ObjectKey, Item]
    verdicts: dict[ObjectKey, _Verdict] = field(default_factory=dict)
    # Fleet's ignore.conditions: conditions left out of readiness
    ignore_conditions: tuple[dict[str, str], ...] = ()

    @classmethod
    def of(cls, deployment: Deployment, items: Iterable[Item]) -> _Applied:
        options = deployment.options
        return cls(
            deployment.deployment_id,
            options.diff.compare_patches if options.diff else (),
            {item.key: item for item in items},
            ignore_conditions=options.ignore.conditions if options.ignore else (),
        )

    def not_ready(self, live: Mapping[str, Any]) -> str | None:
        return readiness.assess(live, ignore_conditions=self.ignore_conditions)


class KubeBackend:
    """Applies, observes and removes bundles on one cluster; see the module docstring."""

    waits_on_io = True

    def __init__(
        self,
        client: KubeClient,
        *,
        settings: AgentSettings,
        on_drift: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_drift = on_drift
        self._client = client
        self._discovery = Discovery(client)
        self._applier = Applier(client, self._discovery, settings)
        self._inventory = Inventory(client, self._applier, settings)
        self._watch = DriftWatch(client, settings=settings, on_event=self._on_event)
        self._applied: dict[str, _Applied] = {}
        self._limit = asyncio.Semaphore(settings.kube_concurrency)
        self._pending: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None

    @classmethod
    async def connect(cls, kubeconfig: Path | None, *, settings: AgentSettings) -> KubeBackend:
        """A backend for the cluster of ``kubeconfig`` (None: the in-cluster service account)."""
        return cls(await KubeClient.connect(kubeconfig, settings=settings), settings=settings)

    async def __aenter__(self) -> KubeBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        await self._watch.close()
        await self._client.close()

    @property
    def watch(self) -> DriftWatch:
        return self._watch

    # --- ClusterBackend ------------------------------------------------------------------

    async def apply(self, deployment: Deployment) -> None:
        bundle = deployment.bundle
        bound = log.bind(bundle=bundle, deployment_id=deployment.deployment_id)
        # correctDrift: shoal's manifest wins over edits. Whoever edits a field takes
        # its ownership (server-side apply moves it on update), so only a forced
        # apply can take it back.
        force = deployment.options.force or deployment.options.correct_drift
        plan = await self._applier.plan(deployment)
        await self._applier.validate([i for i in plan.items if not i.deferred], force=force)
        before = await self._inventory.read(bundle)
        await self._inventory.write(bundle, deployment.deployment_id, before | plan.keys)
        await self._applier.apply_foundation(plan, force=force)
        await self._applier.apply_rest(plan, force=force)
        dropped = before - plan.keys
        if dropped:
            await self._delete(bundle, dropped)
            bound.info("kube.pruned", objects=len(dropped))
        await self._inventory.write(bundle, deployment.deployment_id, plan.keys)
        self._applied[bundle] = _Applied.of(deployment, plan.items)
        self._watch.ensure(self._watched())
        bound.info("kube.applied", objects=len(plan.items), forced=force)

    async def remove(
        self, bundle: str, *, keep_resources: bool, delete_namespace: str = ""
    ) -> None:
        keys = await self._inventory.read(bundle)
        if keep_resources:
            log.info("kube.resources_kept", bundle=bundle, objects=len(keys))
        else:
            await self._delete(bundle, keys)
            if delete_namespace:
                await self._delete_namespace(bundle, delete_namespace)
        await self._inventory.delete(bundle)
        self._applied.pop(bundle, None)
        self._watch.ensure(self._watched())
        log.info("kube.removed", bundle=bundle, deleted=0 if keep_resources else len(keys))

    async def observe(self, deployment: Deployment) -> Observation:
        held = self._applied.get(deployment.bundle)
        try:
            if held is None or held.deployment_id != deployment.deployment_id:
                plan = await self._applier.plan(deployment)
                held = _Applied.of(deployment, plan.items)
            items = list(held.items.values())
            lives = await asyncio.gather(*(self._read(item) for item in items))
        except ApiError as exc:
            reason = f"cannot read the cluster: {exc}"
            first = deployment.objects[0] if deployment.objects else {}
            return Observation(state=State.NOT_READY, non_ready=(condition_of(first, reason),))
        modified: list[ResourceCondition] = []
        non_ready: list[ResourceCondition] = []
        for item, live in zip(items, lives, strict=True):
            changed = drift.differences(item.obj, live, compare_patches=held.compare_patches)
            if changed == [drift.DELETED]:
                modified.append(condition_of(item.obj, "deleted"))
            elif changed:
                modified.append(condition_of(item.obj, "modified: " + ", ".join(changed)))
            elif live is not None and (not_ready := held.not_ready(live)) is not None:
                non_ready.append(condition_of(item.obj, not_ready))
        if modified:
            return Observation(state=State.MODIFIED, modified=tuple(modified))
        if non_ready:
            return Observation(state=State.NOT_READY, non_ready=tuple(non_ready))
        return Observation(state=State.READY)

    async def deployed_bundles(self) -> set[str]:
        return await self._inventory.bundles()

    async def capabilities(self) -> Capabilities:
        async with self._limit:
            kube_version, api_versions = await self._discovery.capabilities()
        return Capabilities(kube_version, api_versions)

    async def read_key(self, kind: str, namespace: str, name: str, key: str) -> str | None:
        resource = {"ConfigMap": CONFIGMAPS, "Secret": SECRETS}[kind]
        async with self._limit:
            live = await self._client.get(resource.path(namespace, name))
        if live is None:
            return None
        if kind == "ConfigMap":
            text = (live.get("data") or {}).get(key)
            return text if isinstance(text, str) else None
        encoded = (live.get("data") or {}).get(key)
        if not isinstance(encoded, str):
            return None
        try:
            return base64.b64decode(encoded).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None

    # --- helpers ----------------------------------------------------------------------

    async def _read(self, item: Item) -> dict[str, Any] | None:
        async with self._limit:
            return await self._client.get(item.path)

    def _watched(self) -> set[Resource]:
        return {i.resource for held in self._applied.values() for i in held.items.values()}

    async def _delete(self, bundle: str, keys: set[ObjectKey]) -> None:
        """Delete shoal's objects of ``bundle`` among ``keys``: custom kinds and CRDs last."""

        def stage(key: ObjectKey) -> int:
            return {NAMESPACES.kind: 2, CRDS.kind: 1}.get(key[1], 0)

        for level in (0, 1, 2):
            batch = sorted(k for k in keys if stage(k) == level)
            await asyncio.gather(*(self._delete_one(bundle, key) for key in batch))

    async def _delete_namespace(self, bundle: str, name: str) -> None:
        """deleteNamespace: only a namespace shoal created for this bundle, never one it found."""
        path = NAMESPACES.path("", name)
        async with self._limit:
            live = await self._client.get(path)
        labels = ((live or {}).get("metadata") or {}).get("labels") or {}
        if live is None or labels.get(CREATED_FOR_LABEL) != bundle:
            log.info(
                "kube.namespace_kept",
                bundle=bundle,
                namespace=name,
                reason="not created by shoal for this bundle",
            )
            return
        try:
            async with self._limit:
                await self._client.request("DELETE", path)
        except ApiError as exc:
            if not exc.not_found:
                raise
        log.info("kube.namespace_deleted", bundle=bundle, namespace=name)

    async def _delete_one(self, bundle: str, key: ObjectKey) -> None:
        api_version, kind, namespace, name = key
        async with self._limit:
            resource = await self._discovery.resource(api_version, kind)
            if resource is None:
                return  # the kind is gone (its CRD was deleted), and its objects with it
            path = resource.path(namespace, name)
            live = await self._client.get(path)
            if live is None:
                return
            owner = ((live.get("metadata") or {}).get("labels") or {}).get(BUNDLE_LABEL)
            if owner != bundle:
                log.warning("kube.delete_skipped_not_ours", bundle=bundle, object=path, owner=owner)
                return
            body = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "propagationPolicy": "Background",
                "preconditions": {"uid": live["metadata"].get("uid")},
            }
            try:
                await self._client.request("DELETE", path, body=body)
            except ApiError as exc:
                if not (exc.not_found or exc.conflict):  # gone, or re-made by someone else
                    raise
            log.info("kube.deleted", bundle=bundle, object=path)

    def _on_event(self, resource: Resource, kind: str, obj: dict[str, Any]) -> None:
        bundle = ((obj.get("metadata") or {}).get("labels") or {}).get(BUNDLE_LABEL)
        held = self._applied.get(str(bundle))
        if held is None:
            return
        key = key_of(obj)
        item = held.items.get((resource.api_version, resource.kind, key[2], key[3]))
        if item is None:
            return
        live = None if kind == "DELETED" else obj
        drifted = bool(drift.differences(item.obj, live, compare_patches=held.compare_patches))
        ready = live is not None and held.not_ready(live) is None
        before = held.verdicts.get(item.key)
        held.verdicts[item.key] = (drifted, ready)
        if before == (drifted, ready) or (before is None and not drifted):
            return
        self._pending.add(str(bundle))
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(self.settings.kube_drift_debounce, self._wake)

    def _wake(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, set()
        for bundle in sorted(pending):
            log.info("kube.drift_seen", bundle=bundle)
            if self.on_drift is not None:
                self.on_drift(bundle)
