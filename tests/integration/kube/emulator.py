"""A Kubernetes API server for tests: kmock's scaffold plus the stateful parts shoal needs.

kmock (by the author of kopf) serves discovery (``/api``, ``/apis``,
``/apis/<group>/<version>``, from the bundled K3s resource list), Kubernetes
``Status`` errors and request parsing, and lets a test put a reaction in
front of anything (``server['patch', kmock.resource('apps/v1/deployments')]
<< 503`` makes every Deployment apply fail with a 503). Its own emulator
stores objects as merged dicts; the backend needs more of the real API, so
this class replaces that layer and adds:

* server-side apply (``application/apply-patch+yaml``) that creates and
  updates, with field ownership per manager (``metadata.managedFields`` in
  FieldsV1 form), 409 conflicts naming the other manager, and ``force``;
* ``dryRun=All`` (validate, answer, store nothing) and validation hooks that
  refuse objects with a 422 ``Invalid`` message as the API words it;
* JSON merge patches (what ``kubectl edit``/``patch`` send) as another manager;
* ``resourceVersion``, ``uid``, ``generation``; label selectors on list and
  watch; watches from a resourceVersion, with ``410 Gone`` once the event
  log is compacted, and ``timeoutSeconds``;
* namespaces that must exist, and whose deletion deletes their objects;
* CRDs that register their kinds in discovery and become Established.

Lists are atomic fields for ownership (as ``x-kubernetes-list-type: atomic``),
which is coarser than the real API but enough for what shoal applies.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import gzip
import importlib.resources
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import parsing as _parsing

Key = tuple[str, str, str, str]  # group, plural, namespace, name
Path = tuple[str, ...]
Validator = Callable[[dict[str, Any]], str | None]

_IDENTITY = frozenset(
    {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp"}
)
_APPLY = "application/apply-patch+yaml"
_CRD = ("apiextensions.k8s.io", "customresourcedefinitions")


@functools.cache
def _builtin_resources() -> bytes:
    return gzip.decompress(
        importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
    )


def _leaves(obj: dict[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    """Owned fields of an object: dict paths down to scalars, lists and empty dicts."""
    out: dict[Path, Any] = {}
    for key, value in obj.items():
        if not prefix and key in ("apiVersion", "kind", "status"):
            continue
        if prefix == ("metadata",) and key in (*_IDENTITY, "managedFields"):
            continue
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            out.update(_leaves(value, path))
        else:
            out[path] = copy.deepcopy(value)
    return out


def _build(leaves: dict[Path, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for path, value in sorted(leaves.items()):
        node = obj
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = copy.deepcopy(value)
    return obj


def _fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def _dotted(path: Path) -> str:
    return "." + ".".join(path)


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesScaffold):
    """See the module docstring; ``validators`` refuse objects, ``crd_delay`` slows CRDs."""

    crd_delay: float = 0.0
    rollout: bool = False  # act as the Deployment controller: roll out every new generation
    # object name -> message of the 500 its applies get, dry runs excepted (a half-way failure)
    failing: dict[str, str] = attrs.field(factory=dict)
    validators: list[Validator] = attrs.field(factory=list)
    store: dict[Key, dict[str, Any]] = attrs.field(factory=dict, init=False)
    owners: dict[Key, dict[str, set[Path]]] = attrs.field(factory=dict, init=False)
    _rv: itertools.count[int] = attrs.field(factory=lambda: itertools.count(100), init=False)
    _last_rv: int = attrs.field(default=99, init=False)
    _events: list[tuple[int, str, str, str, dict[str, Any]]] = attrs.field(factory=list, init=False)
    _horizon: int = attrs.field(default=0, init=False)
    _tick: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _drops: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock's bundled K3s resource list (load_bundled() uses a deprecated importlib API)
        self.resources.load_data(_builtin_resources())
        self.fallback[kmock.action.WATCH] << self._serve_watch
        self.fallback[kmock.action.LIST] << self._serve_list
        self.fallback[kmock.action.FETCH] << self._serve_fetch
        self.fallback[kmock.action.UPDATE] << self._serve_patch
        self.fallback[kmock.action.DELETE] << self._serve_delete
        for name in ("default", "kube-system", "kube-public"):
            self._store_put(("", "namespaces", "", name), self._fresh("v1", "Namespace", name))

    # --- test helpers (what controllers and people do to a cluster) ---------------

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        res = kmock.resource(resource)
        obj = self.store.get((res.group or "", res.plural or "", namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def names(self, resource: str) -> set[tuple[str, str]]:
        res = kmock.resource(resource)
        return {(k[2], k[3]) for k in self.store if k[:2] == (res.group or "", res.plural)}

    async def edit(
        self, resource: str, namespace: str, name: str, patch: dict[str, Any], *, manager: str
    ) -> None:
        """A merge patch by another field manager, as ``kubectl edit`` makes."""
        res = kmock.resource(resource)
        self._update((res.group or "", res.plural or "", namespace, name), patch, manager)
        await self._notify()

    async def put(self, resource: str, namespace: str, name: str, obj: dict[str, Any]) -> None:
        """Store ``obj`` as someone else's object (no shoal field manager)."""
        res = kmock.resource(resource)
        key = (res.group or "", res.plural or "", namespace, name)
        meta = obj.setdefault("metadata", {})
        meta.update({"name": name, "uid": str(uuid.uuid4()), "generation": 1})
        if namespace:
            meta["namespace"] = namespace
        self.owners[key] = {"kubectl-create": set(_leaves(obj))}
        self._store_put(key, obj)
        await self._notify()

    async def set_status(
        self, resource: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Write ``.status`` as the object's controller does."""
        res = kmock.resource(resource)
        key = (res.group or "", res.plural or "", namespace, name)
        obj = copy.deepcopy(self.store[key])
        obj["status"] = status
        self._store_put(key, obj)
        await self._notify()

    async def remove(self, resource: str, namespace: str, name: str) -> None:
        res = kmock.resource(resource)
        self._delete((res.group or "", res.plural or "", namespace, name))
        await self._notify()

    def drop_watches(self) -> None:
        """End every open watch, as a restarting API server or a proxy would."""
        self._drops += 1
        self._wake_watches()

    def compact(self) -> None:
        """Forget the event log: watches from an older resourceVersion get 410 Gone."""
        self._events.clear()
        self._horizon = self._last_rv

    # --- storage -----------------------------------------------------------------

    def _fresh(self, api_version: str, kind: str, name: str) -> dict[str, Any]:
        return {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "generation": 1},
        }

    def _store_put(self, key: Key, obj: dict[str, Any]) -> None:
        kind = "MODIFIED" if key in self.store else "ADDED"
        self._last_rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(self._last_rv)
        obj["metadata"].setdefault("creationTimestamp", "2024-01-01T00:00:00Z")
        owners = self.owners.get(key, {})
        obj["metadata"]["managedFields"] = [
            {
                "manager": manager,
                "operation": "Apply" if manager.startswith("shoal") else "Update",
                "apiVersion": obj.get("apiVersion", ""),
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields_v1(paths),
            }
            for manager, paths in sorted(owners.items())
            if paths
        ]
        self.store[key] = obj
        self._events.append((self._last_rv, kind, key[0], key[1], copy.deepcopy(obj)))
        if key[:2] == _CRD:
            self._crd_changed(obj)
        if self.rollout and key[:2] == ("apps", "deployments"):
            observed = (obj.get("status") or {}).get("observedGeneration")
            if observed != obj["metadata"]["generation"]:
                asyncio.get_running_loop().call_later(0.05, self._roll_out, key)

    def _roll_out(self, key: Key) -> None:
        obj = copy.deepcopy(self.store.get(key))
        if obj is None:
            return
        replicas = int(obj["spec"].get("replicas", 1))
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [{"type": "Available", "status": "True"}],
        }
        self._store_put(key, obj)
        self._wake_watches()

    def _delete(self, key: Key) -> dict[str, Any]:
        obj = self.store.pop(key, None)
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError(
                message=f'{key[1]} "{key[3]}" not found', details={"name": key[3]}
            )
        self.owners.pop(key, None)
        self._last_rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(self._last_rv)
        self._events.append((self._last_rv, "DELETED", key[0], key[1], copy.deepcopy(obj)))
        if key[:2] == ("", "namespaces"):
            for other in [k for k in self.store if k[2] == key[3]]:
                self._delete(other)
        if key[:2] == _CRD:
            group, plural = obj["spec"]["group"], obj["spec"]["names"]["plural"]
            for other in [k for k in self.store if k[:2] == (group, plural)]:
                self._delete(other)
            for version in obj["spec"]["versions"]:
                del self.resources[f"{group}/{version['name']}/{plural}"]
        return obj

    def _wake_watches(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def _notify(self) -> None:
        self._wake_watches()

    def _crd_changed(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec.get("versions", []):
            info = self.resources[f"{spec['group']}/{version['name']}/{spec['names']['plural']}"]
            info.kind = spec["names"]["kind"]
            info.namespaced = spec.get("scope", "Namespaced") == "Namespaced"
            info.verbs = {"get", "list", "watch", "patch", "delete", "create", "update"}
        if not crd.get("status", {}).get("conditions"):
            asyncio.get_running_loop().call_later(self.crd_delay, self._establish, crd)

    def _establish(self, crd: dict[str, Any]) -> None:
        key = (*_CRD, "", crd["metadata"]["name"])
        if key in self.store:
            obj = copy.deepcopy(self.store[key])
            obj["status"] = {
                "conditions": [
                    {"type": "NamesAccepted", "status": "True"},
                    {"type": "Established", "status": "True"},
                ]
            }
            self._store_put(key, obj)
            self._wake_watches()

    # --- request handling --------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # kmock reads /api/v1/namespaces/NAME as "namespace NAME" with no resource;
        # the API means the Namespace object NAME.
        parts = request.url.path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            name = parts[3] if len(parts) == 4 else None
            path = _parsing.ParsedPath("", "v1", "namespaces", None, name)
            fixed = attrs.evolve(
                request,
                resource=kmock.resource("", "v1", "namespaces"),
                namespace=None,
                name=name,
                action=_parsing.guess_k8s(path, request.method, dict(request.params)),
            )
            # kmock's views find requests by identity in the request log: swap it there too.
            self._requests[self._requests.index(request)] = fixed
            request = fixed
        return await super()._handle(request)

    def _key(self, request: kmock.Request) -> Key:
        res = request.resource
        assert res is not None
        return (res.group or "", res.plural or "", request.namespace or "", request.name or "")

    def _info(self, request: kmock.Request) -> kmock.ResourceInfo:
        res = request.resource
        assert res is not None
        for known in self.resources:
            if known == res:
                return self.resources[known]
        raise kmock.KubernetesResourceNotFoundError(
            message="the server could not find the requested resource"
        )

    def _selected(self, request: kmock.Request, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if request.namespace is not None and meta.get("namespace", "") != request.namespace:
            return False
        if request.name is not None and meta["name"] != request.name:
            return False
        selector = request.params.get("labelSelector", "")
        return _selector_matches(selector, meta.get("labels") or {})

    async def _serve_list(self, request: kmock.Request) -> dict[str, Any]:
        self._info(request)
        res = request.resource
        assert res is not None
        items = [
            copy.deepcopy(obj)
            for key, obj in sorted(self.store.items())
            if key[:2] == (res.group, res.plural) and self._selected(request, obj)
        ]
        return {"kind": "List", "metadata": {"resourceVersion": str(self._last_rv)}, "items": items}

    async def _serve_fetch(self, request: kmock.Request) -> dict[str, Any]:
        self._info(request)
        obj = self.store.get(self._key(request))
        if obj is None:
            raise kmock.KubernetesObjectNotFoundError(
                message=f'{request.resource.plural} "{request.name}" not found'  # type: ignore[union-attr]
            )
        return copy.deepcopy(obj)

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        self._info(request)
        res = request.resource
        assert res is not None
        yield b""
        since = int(request.params.get("resourceVersion") or self._last_rv)
        if since < self._horizon:
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
            return
        timeout = float(request.params.get("timeoutSeconds") or 3600)
        deadline = asyncio.get_running_loop().time() + timeout
        epoch = self._drops
        while self._drops == epoch:
            tick = self._tick
            for rv, kind, group, plural, obj in list(self._events):
                mine = rv > since and (group, plural) == (res.group, res.plural)
                if mine and self._selected(request, obj):
                    yield {"type": kind, "object": obj}
            since = max(since, self._last_rv)
            try:
                async with asyncio.timeout(deadline - asyncio.get_running_loop().time()):
                    await tick.wait()
            except TimeoutError:
                return

    async def _serve_delete(self, request: kmock.Request) -> dict[str, Any]:
        self._info(request)
        key = self._key(request)
        precondition = (request.data or {}).get("preconditions", {}).get("uid")
        live = self.store.get(key)
        if live is not None and precondition and live["metadata"]["uid"] != precondition:
            raise kmock.KubernetesError(status=409, reason="Conflict", message="uid precondition")
        obj = self._delete(key)
        await self._notify()
        return obj

    async def _serve_patch(self, request: kmock.Request) -> dict[str, Any]:
        info = self._info(request)
        key = self._key(request)
        manager = request.params.get("fieldManager", "unknown")
        dry_run = request.params.get("dryRun") == "All"
        if not dry_run and key[3] in self.failing:
            raise kmock.KubernetesError(
                status=500, reason="InternalError", message=self.failing[key[3]]
            )
        if request.headers.get("Content-Type", "").startswith(_APPLY):
            body = json.loads(request.text)
            force = request.params.get("force") == "true"
            obj = self._apply(key, body, manager, info, force=force, dry_run=dry_run)
        else:
            obj = self._update(key, request.data, manager, dry_run=dry_run)
        if not dry_run:
            await self._notify()
        return obj

    def _check(self, key: Key, obj: dict[str, Any], info: kmock.ResourceInfo) -> None:
        if info.namespaced and (("", "namespaces", "", key[2]) not in self.store):
            raise kmock.KubernetesObjectNotFoundError(message=f'namespaces "{key[2]}" not found')
        for validate in self.validators:
            problem = validate(obj)
            if problem:
                group = f".{key[0]}" if key[0] else ""
                raise kmock.KubernetesError(
                    status=422,
                    reason="Invalid",
                    message=f'{obj.get("kind")}{group} "{key[3]}" is invalid: {problem}',
                )

    def _apply(
        self,
        key: Key,
        body: dict[str, Any],
        manager: str,
        info: kmock.ResourceInfo,
        *,
        force: bool,
        dry_run: bool,
    ) -> dict[str, Any]:
        live = self.store.get(key)
        owners = copy.deepcopy(self.owners.get(key, {}))
        live_leaves = _leaves(live) if live else {}
        wanted = _leaves(body)
        conflicts = sorted(
            (other, path)
            for other, paths in owners.items()
            if other != manager
            for path in paths & wanted.keys()
            if live_leaves.get(path) != wanted[path]
        )
        if conflicts and not force:
            listed = "\n".join(f'* conflict with "{m}": {_dotted(p)}' for m, p in conflicts)
            raise kmock.KubernetesError(
                status=409,
                reason="Conflict",
                message=f"Apply failed with {len(conflicts)} conflict(s):\n{listed}",
            )
        mine = owners.get(manager, set())
        shared = set().union(*(p for m, p in owners.items() if m != manager))
        leaves = {p: v for p, v in live_leaves.items() if p in wanted or p not in mine - shared}
        leaves.update(wanted)
        for other, paths in owners.items():
            if other != manager:
                paths -= {path for _, path in conflicts}
        owners[manager] = set(wanted)
        obj = _build(leaves)
        obj["apiVersion"], obj["kind"] = body["apiVersion"], body["kind"]
        return self._commit(key, live, obj, owners, info, dry_run=dry_run)

    def _update(
        self, key: Key, patch: dict[str, Any], manager: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        live = self.store.get(key)
        if live is None:
            raise kmock.KubernetesObjectNotFoundError(message=f'{key[1]} "{key[3]}" not found')
        obj = _merge_patch(copy.deepcopy(live), patch)
        before, after = _leaves(live), _leaves(obj)
        changed = {p for p in after if before.get(p) != after[p]}
        owners = copy.deepcopy(self.owners.get(key, {}))
        for other in owners:
            owners[other] = (owners[other] - changed) & after.keys()
        owners.setdefault(manager, set()).update(changed)
        info = self.resources[f"{key[0]}/{live['apiVersion'].split('/')[-1]}/{key[1]}"]
        return self._commit(key, live, obj, owners, info, dry_run=dry_run)

    def _commit(
        self,
        key: Key,
        live: dict[str, Any] | None,
        obj: dict[str, Any],
        owners: dict[str, set[Path]],
        info: kmock.ResourceInfo,
        *,
        dry_run: bool,
    ) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta["name"] = key[3]
        if info.namespaced:
            meta["namespace"] = key[2]
        self._check(key, obj, info)
        if live is not None:
            for field in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                meta[field] = live["metadata"].get(field)
            if "status" in live:
                obj["status"] = copy.deepcopy(live["status"])
            unchanged = _leaves(live) == _leaves(obj) and owners == self.owners.get(key, {})
            if unchanged:
                return copy.deepcopy(live)
            spec = {p: v for p, v in _leaves(obj).items() if p[0] != "metadata"}
            if spec != {p: v for p, v in _leaves(live).items() if p[0] != "metadata"}:
                meta["generation"] = int(meta.get("generation") or 1) + 1
        else:
            meta.update({"uid": str(uuid.uuid4()), "generation": 1})
        if dry_run:
            return obj
        self.owners[key] = {m: p for m, p in owners.items() if p}
        self._store_put(key, obj)
        return copy.deepcopy(obj)


def replicas_not_negative(obj: dict[str, Any]) -> str | None:
    """The API's own check of ``spec.replicas``, one a standalone server applies."""
    replicas = (obj.get("spec") or {}).get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        return f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
    return None


async def serve(port: int, *, rollout: bool) -> None:
    """Serve an emulated cluster on 127.0.0.1:``port`` until cancelled."""
    server_ = ApiServer(rollout=rollout, validators=[replicas_not_negative])
    async with server_ as server, kmock.Server(server, port=port):
        print(f"serving {str(server.url).rstrip('/')}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":  # python -m tests.integration.kube.emulator PORT [--rollout]
    import sys

    asyncio.run(serve(int(sys.argv[1]), rollout="--rollout" in sys.argv))
