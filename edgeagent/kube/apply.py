"""Server-side apply of one bundle deployment: validated first, in dependency order.

Every object is sent as a server-side apply (``PATCH`` with
``application/apply-patch+yaml``, ``fieldManager=shoal``): the API merges it
with what others own, and a field another manager owns with another value is
a 409 conflict. shoal does not take such fields over unless the bundle says
``force: true``; otherwise the conflict becomes a condition naming the object
and the other manager.

Each object carries the label ``shoal.dev/bundle=<bundle>`` (what drift
watches select on and what deletion checks before touching anything) and
the annotation ``shoal.dev/deployment-id``.

All or nothing, as far as the API lets one tell in advance:

1. :meth:`Applier.plan` resolves each kind through discovery and finds the
   namespaces that do not exist yet. An object is *deferred* when the API
   cannot judge it yet: it lives in a namespace that does not exist, or it is
   a custom resource whose CRD comes with the bundle and is not served yet.
2. :meth:`Applier.validate` dry-runs (``dryRun=All``) every object that is
   not deferred, concurrently. One refusal and nothing is applied.
3. :meth:`Applier.apply_foundation` applies Namespaces and CRDs (and creates
   namespaces the bundle uses without declaring them), waits until the CRDs
   are Established, then dry-runs the deferred objects.
4. :meth:`Applier.apply_rest` applies everything else.

So a refused bundle never leaves workload objects behind; the only thing it
can leave is a Namespace or CRD it declares or needs, when the refusal is
of an object that could only be judged after them.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from edgeagent.backend import Deployment, condition_of
from edgeagent.kube.client import APPLY_PATCH, JsonObject, KubeClient
from edgeagent.kube.discovery import Discovery, Resource
from edgeagent.kube.errors import ApiError, ApplyRefused
from edgeagent.settings import AgentSettings
from protocol.messages import ResourceCondition

log = structlog.get_logger(__name__)

BUNDLE_LABEL = "shoal.dev/bundle"
DEPLOYMENT_ANNOTATION = "shoal.dev/deployment-id"
CREATED_FOR_LABEL = "shoal.dev/created-for"
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
_CRD_POLL = 0.2

ObjectKey = tuple[str, str, str, str]  # apiVersion, kind, namespace, name


def labelled(obj: dict[str, Any], *, bundle: str, deployment_id: str) -> dict[str, Any]:
    """A copy of ``obj`` carrying shoal's bundle label and deployment annotation."""
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), BUNDLE_LABEL: bundle}
    meta["annotations"] = {**(meta.get("annotations") or {}), DEPLOYMENT_ANNOTATION: deployment_id}
    return out


def key_of(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion", "")),
        str(obj.get("kind", "")),
        str(meta.get("namespace") or ""),
        str(meta.get("name", "")),
    )


@dataclass
class Item:
    """One object to apply and the resource that serves it."""

    obj: dict[str, Any]
    resource: Resource
    deferred: bool = False

    @property
    def key(self) -> ObjectKey:
        return key_of(self.obj)

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace") or "")

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def path(self) -> str:
        return self.resource.path(self.namespace, self.name)

    @property
    def foundation(self) -> bool:
        return self.resource in (NAMESPACES, CRDS)


@dataclass
class Plan:
    bundle: str
    items: list[Item]
    missing_namespaces: list[str] = field(default_factory=list)
    # Fleet's namespaceLabels/namespaceAnnotations: metadata for the bundle's
    # target namespace (``namespace``, else ``defaultNamespace``), applied as
    # shoal's fields whether shoal creates that namespace or it exists already.
    namespace_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> set[ObjectKey]:
        return {item.key for item in self.items}


def _namespace_metadata(deployment: Deployment) -> dict[str, Any]:
    options = deployment.options
    name = options.namespace or options.default_namespace
    if not name or not (options.namespace_labels or options.namespace_annotations):
        return {}
    metadata: dict[str, Any] = {"name": name}
    if options.namespace_labels:
        metadata["labels"] = dict(options.namespace_labels)
    if options.namespace_annotations:
        metadata["annotations"] = dict(options.namespace_annotations)
    return metadata


def _served_by_crds(items: Iterable[dict[str, Any]]) -> dict[tuple[str, str], Resource]:
    """(apiVersion, kind) -> Resource for the custom kinds the bundle's own CRDs define."""
    served: dict[tuple[str, str], Resource] = {}
    for obj in items:
        if (obj.get("apiVersion"), obj.get("kind")) != (CRDS.api_version, CRDS.kind):
            continue
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            resource = Resource(
                group=str(spec.get("group", "")),
                version=str(version.get("name", "")),
                plural=str(names.get("plural", "")),
                kind=str(names.get("kind", "")),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            )
            served[(resource.api_version, resource.kind)] = resource
    return served


def _reason(exc: ApiError) -> str:
    if exc.conflict:
        return f"{exc} (another field manager owns these fields; set force to take them over)"
    return str(exc)


def refused(
    failures: list[tuple[dict[str, Any], str, bool]], total: int, *, stage: str
) -> ApplyRefused:
    """The error for objects the API refused: one condition per object, with its message."""
    conditions = tuple(condition_of(obj, reason) for obj, reason, _ in failures)
    first = conditions[0]
    where = f"{first.namespace}/{first.name}" if first.namespace else first.name
    return ApplyRefused(
        f"{stage}: the cluster refused {len(failures)} of {total} objects; "
        f"{first.kind} {where}: {first.reason}",
        conditions=conditions,
        transient=all(transient for _, _, transient in failures),
    )


class Applier:
    """Plans, validates and applies deployments; see the module docstring."""

    def __init__(self, client: KubeClient, discovery: Discovery, settings: AgentSettings) -> None:
        self._client = client
        self._discovery = discovery
        self._settings = settings
        self._limit = asyncio.Semaphore(settings.kube_concurrency)

    async def _each(
        self, items: list[Item], call: Callable[[Item], Awaitable[object]]
    ) -> list[tuple[Item, ApiError]]:
        async def one(item: Item) -> tuple[Item, ApiError] | None:
            async with self._limit:
                try:
                    await call(item)
                except ApiError as exc:
                    return item, exc
            return None

        results = await asyncio.gather(*(one(item) for item in items))
        return [result for result in results if result is not None]

    async def server_side_apply(
        self,
        resource: Resource,
        obj: dict[str, Any],
        *,
        force: bool,
        dry_run: bool = False,
        manager: str = "",
    ) -> JsonObject:
        meta = obj["metadata"]
        query = [("fieldManager", manager or self._settings.kube_field_manager)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        return await self._client.request(
            "PATCH",
            resource.path(str(meta.get("namespace") or ""), str(meta["name"])),
            query=query,
            body=obj,
            content_type=APPLY_PATCH,
        )

    # --- the stages ------------------------------------------------------------------

    async def plan(self, deployment: Deployment) -> Plan:
        """Resolve every object's resource; ApplyRefused if a kind is served nowhere."""
        objects = [
            labelled(o, bundle=deployment.bundle, deployment_id=deployment.deployment_id)
            for o in deployment.objects
        ]
        from_crds = _served_by_crds(objects)
        items: list[Item] = []
        unknown: list[tuple[dict[str, Any], str, bool]] = []
        for obj in objects:
            api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
            resource = await self._discovery.resource(api_version, kind)
            deferred = False
            if resource is None and (api_version, kind) in from_crds:
                resource, deferred = from_crds[(api_version, kind)], True
            if resource is None:
                reason = f"the cluster serves no kind {kind} in {api_version}"
                unknown.append((obj, reason, True))
                continue
            if not resource.namespaced:
                obj["metadata"].pop("namespace", None)
            items.append(Item(obj, resource, deferred))
        if unknown:
            raise refused(unknown, len(objects), stage="discovery")
        declared = {i.name for i in items if i.resource == NAMESPACES}
        wanted = sorted({i.namespace for i in items if i.resource.namespaced})
        exists = await asyncio.gather(*(self._client.get(NAMESPACES.path("", n)) for n in wanted))
        missing = {n for n, live in zip(wanted, exists, strict=True) if live is None}
        for item in items:
            if item.resource.namespaced and item.namespace in missing:
                item.deferred = True
        metadata = _namespace_metadata(deployment)
        for item in items:
            if metadata and item.resource == NAMESPACES and item.name == metadata["name"]:
                # Declared in the bundle: the labels go on that object, one apply.
                meta = item.obj["metadata"]
                for key in ("labels", "annotations"):
                    if key in metadata:
                        meta[key] = {**metadata[key], **(meta.get(key) or {})}
                metadata = {}
        return Plan(deployment.bundle, items, sorted(missing - declared), metadata)

    async def validate(self, items: list[Item], *, force: bool, stage: str = "dry run") -> None:
        """Dry-run ``items``; ApplyRefused naming every refused one, having changed nothing."""

        async def dry_run(item: Item) -> None:
            await self.server_side_apply(item.resource, item.obj, force=force, dry_run=True)

        failures = await self._each(items, dry_run)
        if failures:
            raise refused(
                [(i.obj, _reason(e), e.transient or e.conflict) for i, e in failures],
                len(items),
                stage=stage,
            )

    async def apply_foundation(self, plan: Plan, *, force: bool) -> None:
        """Namespaces and CRDs first; then judge what had to wait for them."""
        for name in plan.missing_namespaces:
            # Marked, so that deleteNamespace can tell a namespace shoal made from one it found.
            meta = {"name": name, "labels": {CREATED_FOR_LABEL: plan.bundle}}
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
            await self.server_side_apply(NAMESPACES, body, force=False)
            log.info("kube.namespace_created", bundle=plan.bundle, namespace=name)
        if plan.namespace_metadata:
            # A manager of the bundle's own: bundles sharing a namespace keep each
            # other's labels (one manager's apply drops the fields it left out).
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": plan.namespace_metadata}
            manager = f"{self._settings.kube_field_manager}-{plan.bundle}"[:128]
            await self.server_side_apply(NAMESPACES, body, force=force, manager=manager)
        foundation = [i for i in plan.items if i.foundation]
        await self._apply(foundation, force=force, total=len(plan.items))
        crds = [i for i in foundation if i.resource == CRDS]
        if crds:
            await self._wait_established(crds, plan)
        deferred = [i for i in plan.items if i.deferred and not i.foundation]
        if deferred:
            await self.validate(deferred, force=force, stage="dry run after namespaces and CRDs")

    async def apply_rest(self, plan: Plan, *, force: bool) -> dict[ObjectKey, JsonObject]:
        """Everything but Namespaces and CRDs; the live objects as the API answered."""
        rest = [i for i in plan.items if not i.foundation]
        return await self._apply(rest, force=force, total=len(plan.items))

    async def _apply(
        self, items: list[Item], *, force: bool, total: int
    ) -> dict[ObjectKey, JsonObject]:
        live: dict[ObjectKey, JsonObject] = {}

        async def apply(item: Item) -> None:
            live[item.key] = await self.server_side_apply(item.resource, item.obj, force=force)

        failures = await self._each(items, apply)
        if failures:
            raise refused(
                [(i.obj, _reason(e), e.transient or e.conflict) for i, e in failures],
                total,
                stage="apply",
            )
        return live

    async def _wait_established(self, crds: list[Item], plan: Plan) -> None:
        deadline = asyncio.get_running_loop().time() + self._settings.kube_crd_timeout
        pending = list(crds)
        while pending:
            lives = await asyncio.gather(*(self._client.get(i.path) for i in pending))
            pending = [i for i, live in zip(pending, lives, strict=True) if not _established(live)]
            if not pending:
                break
            if asyncio.get_running_loop().time() >= deadline:
                reason = f"CRD not Established after {self._settings.kube_crd_timeout:.0f} s"
                raise refused(
                    [(i.obj, reason, True) for i in pending], len(plan.items), stage="apply"
                )
            await asyncio.sleep(_CRD_POLL)
        for item in plan.items:
            if item.deferred and not item.foundation and item.resource.group:
                self._discovery.forget(item.resource.api_version)


def _established(crd: JsonObject | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def conditions_of_keys(keys: Iterable[ObjectKey], reason: str) -> tuple[ResourceCondition, ...]:
    return tuple(
        ResourceCondition(kind=k, name=n, namespace=ns, api_version=av, reason=reason)
        for av, k, ns, n in sorted(keys)
    )
