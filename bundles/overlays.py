"""Fleet's ``yaml.overlays``: per-cluster replacements and patches of raw YAML files.

A bundle of plain manifests customizes them per target by naming overlay
directories: for each name, in order, the files under ``overlays/<name>/``
apply to the bundle's files of the same relative path. ``x.yaml`` there
replaces (or adds) ``x.yaml``; ``x_patch.yaml`` patches it (the first
``_patch.`` in the file name becomes ``.``, so ``x_patch.json`` patches
``x.json``). As in Fleet, the patch's shape picks the strategy:

* a list is a JSON patch (RFC 6902);
* an empty map changes nothing;
* a map patching a built-in Kubernetes kind (Deployment, Service...) is a
  strategic merge patch; for any other kind, a JSON merge patch (RFC 7386).

The strategic merge here covers what patches of manifests use: maps merge
key by key, ``null`` deletes, lists of containers, env, ports, volumes,
volume mounts... merge item by item on their merge key (``name``,
``containerPort``/``port``, ``mountPath``...), other lists are replaced, and
the ``$patch: replace|delete`` directives work. Other directives
(``$retainKeys``, ``$deleteFromPrimitiveList``) are refused with an error.

Within one overlay, replacements apply before patches, each in name order
(Fleet leaves that order to chance). Files under ``overlays/`` never reach
the cluster themselves.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from bundles.errors import OverlayError
from bundles.fleetyaml import FLEET_YAML_NAMES, YamlLoader
from protocol.models import BundleResource

OVERLAY_PREFIX = "overlays/"
PATCH_MARKER = "_patch."
RAW_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def apply_overlays(
    resources: Iterable[BundleResource], overlays: Sequence[str]
) -> list[BundleResource]:
    """The bundle's files with the named overlays applied, ``overlays/`` left out, by name."""
    files = {r.name: r for r in resources}
    for overlay in overlays:
        prefix = f"{OVERLAY_PREFIX}{overlay}/"
        members = sorted(name for name in files if name.startswith(prefix))
        if not members:
            raise OverlayError(
                f"overlay {overlay!r}: no files under {prefix}", file=prefix, field="yaml.overlays"
            )
        patches = [name for name in members if patch_target(name.removeprefix(prefix))]
        for name in members:
            if name not in patches:
                relative = name.removeprefix(prefix)
                files[relative] = files[name].model_copy(update={"name": relative})
        for name in patches:
            target = patch_target(name.removeprefix(prefix)) or ""
            base = files.get(target)
            if base is None:
                raise OverlayError(f"{name}: no file {target} to patch", file=name)
            files[target] = BundleResource(name=target, content=patch_file(base, files[name]))
    return sorted(
        (r for name, r in files.items() if not name.startswith(OVERLAY_PREFIX)),
        key=lambda r: r.name,
    )


def patch_target(name: str) -> str | None:
    """The file a patch file patches (``a/x_patch.yaml`` -> ``a/x.yaml``), or None."""
    directory, base = posixpath.split(name)
    if PATCH_MARKER not in base:
        return None
    return posixpath.join(directory, base.replace(PATCH_MARKER, ".", 1))


def raw_manifests(resources: Iterable[BundleResource]) -> list[BundleResource]:
    """The files Fleet deploys as raw YAML: ``*.yaml``, ``*.yml``, ``*.json``.

    Left out, as in Fleet: ``fleet.yaml``, anything under ``overlays/``, and
    the files of any subdirectory holding a ``fleet.yaml`` (another bundle) or
    a ``Chart.yaml`` (a chart, not manifests).
    """
    resources = list(resources)
    excluded = [
        posixpath.dirname(r.name) + "/"
        for r in resources
        if "/" in r.name and posixpath.basename(r.name) in (*FLEET_YAML_NAMES, "Chart.yaml")
    ]
    return sorted(
        (
            r
            for r in resources
            if r.name.endswith(RAW_MANIFEST_SUFFIXES)
            and r.name not in FLEET_YAML_NAMES
            and not r.name.startswith(OVERLAY_PREFIX)
            and not any(r.name.startswith(prefix) for prefix in excluded)
        ),
        key=lambda r: r.name,
    )


def patch_file(base: BundleResource, patch: BundleResource) -> str:
    """``base``'s content with ``patch`` applied, as YAML; errors name the patch file."""
    if base.encoding or patch.encoding:
        raise OverlayError(f"{patch.name}: binary files cannot be patched", file=patch.name)
    target = _single_document(base, patch.name)
    document = _single_document(patch, patch.name)
    try:
        if isinstance(document, list):
            result = json_patch(target, document)
        elif not isinstance(document, dict):
            raise ValueError(f"a patch is a map or a list, not {type(document).__name__}")
        elif not document:
            result = target
        elif isinstance(target, dict) and is_builtin_kind(target):
            result = strategic_merge(target, document)
        else:
            result = merge_patch(target, document)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise OverlayError(
            f"{patch.name}: cannot patch {base.name}: {exc}", file=patch.name
        ) from exc
    return yaml.safe_dump(result, sort_keys=False, allow_unicode=True, default_flow_style=False)


def _single_document(resource: BundleResource, patch_name: str) -> Any:
    try:
        documents = [d for d in yaml.load_all(resource.content, Loader=YamlLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise OverlayError(
            f"{patch_name}: {resource.name} is not valid YAML{where}", file=patch_name
        ) from exc
    if len(documents) > 1:
        raise OverlayError(
            f"{patch_name}: {resource.name} holds {len(documents)} YAML documents; "
            "a patch applies to a file of one document",
            file=patch_name,
        )
    return documents[0] if documents else {}


# -- JSON merge patch (RFC 7386) ------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` removes a key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# -- strategic merge patch (the common subset) ----------------------------------------

_BUILTIN_KINDS: dict[str, frozenset[str]] = {
    "": frozenset(
        [
            "Pod",
            "Service",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Namespace",
            "PersistentVolumeClaim",
            "PersistentVolume",
            "Endpoints",
            "LimitRange",
            "ResourceQuota",
            "ReplicationController",
            "PodTemplate",
            "Node",
            "Event",
        ]
    ),
    "apps": frozenset(
        ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ControllerRevision"]
    ),
    "batch": frozenset({"Job", "CronJob"}),
    "networking.k8s.io": frozenset({"Ingress", "IngressClass", "NetworkPolicy"}),
    "rbac.authorization.k8s.io": frozenset(
        {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    ),
    "policy": frozenset({"PodDisruptionBudget"}),
    "autoscaling": frozenset({"HorizontalPodAutoscaler"}),
    "storage.k8s.io": frozenset({"StorageClass", "CSIDriver", "VolumeAttachment"}),
    "scheduling.k8s.io": frozenset({"PriorityClass"}),
    "coordination.k8s.io": frozenset({"Lease"}),
    "admissionregistration.k8s.io": frozenset(
        {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    ),
}

# List fields merged item by item, and the key that identifies an item.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "topologySpreadConstraints": "topologyKey",
    "webhooks": "name",
    "resourceClaims": "name",
}


def is_builtin_kind(obj: Mapping[str, Any]) -> bool:
    """Whether Kubernetes itself defines the kind, so strategic merge applies to it."""
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return False
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return kind in _BUILTIN_KINDS.get(group, frozenset())


def strategic_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    directive = patch.get("$patch", "merge")
    body = {
        k: v for k, v in patch.items() if k != "$patch" and not k.startswith("$setElementOrder/")
    }
    if directive == "replace":
        return copy.deepcopy(body)
    if directive != "merge":
        raise ValueError(f"unsupported $patch directive {directive!r} in a map")
    unsupported = [k for k in body if k.startswith("$")]
    if unsupported:
        raise ValueError(f"unsupported patch directive {unsupported[0]!r}")
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in body.items():
        if value is None or (isinstance(value, Mapping) and value.get("$patch") == "delete"):
            out.pop(key, None)
        elif isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_list(key, out[key], value)
        else:
            out[key] = strategic_merge(out.get(key), value)
    return out


def _merge_key(field: str, items: Sequence[Any]) -> str | None:
    if field == "ports":
        maps = [i for i in items if isinstance(i, Mapping)]
        if maps and all("containerPort" in i for i in maps):
            return "containerPort"
        if maps and all("port" in i for i in maps):
            return "port"
        return None
    return _MERGE_KEYS.get(field)


def _merge_list(field: str, base: list[Any], patch: list[Any]) -> list[Any]:
    if any(isinstance(i, Mapping) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, Mapping) and "$patch" in i)]
    key = _merge_key(field, patch)
    if key is None:
        return copy.deepcopy(patch)
    out = list(base)
    for item in patch:
        if not isinstance(item, Mapping) or key not in item:
            raise ValueError(f"an item of {field} lacks its merge key {key!r}")
        index = next(
            (
                i
                for i, old in enumerate(out)
                if isinstance(old, Mapping) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append(strategic_merge({}, item))
        else:
            out[index] = strategic_merge(out[index], item)
    return out


# -- JSON patch (RFC 6902) ------------------------------------------------------------


def json_patch(document: Any, operations: Sequence[Any]) -> Any:
    """RFC 6902 operations applied in order to a copy of ``document``."""
    doc = copy.deepcopy(document)
    for number, op in enumerate(operations):
        if not isinstance(op, Mapping) or not isinstance(op.get("op"), str):
            raise ValueError(f"operation {number} is not a map with an 'op'")
        kind, path = op["op"], op.get("path")
        if not isinstance(path, str):
            raise ValueError(f"operation {number} ({kind}) has no 'path'")
        if kind == "add":
            doc = _add(doc, _pointer(path), copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, _pointer(path))[0]
        elif kind == "replace":
            doc = _remove(doc, _pointer(path))[0]
            doc = _add(doc, _pointer(path), copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise ValueError(f"operation {number} ({kind}) has no 'from'")
            if kind == "move":
                doc, value = _remove(doc, _pointer(source))
            else:
                value = copy.deepcopy(_get(doc, _pointer(source)))
            doc = _add(doc, _pointer(path), value)
        elif kind == "test":
            if _get(doc, _pointer(path)) != op.get("value"):
                raise ValueError(f"operation {number}: test of {path} failed")
        else:
            raise ValueError(f"operation {number}: unknown op {kind!r}")
    return doc


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} does not start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, insert: bool) -> int:
    if token == "-" and insert:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise ValueError(f"{token!r} is not an array index")
    index = int(token)
    if index > len(container) or (index == len(container) and not insert):
        raise IndexError(f"array index {index} out of range")
    return index


def _get(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            if part not in doc:
                raise KeyError(f"no key {part!r}")
            doc = doc[part]
        elif isinstance(doc, list):
            doc = doc[_index(doc, part, insert=False)]
        else:
            raise ValueError(f"cannot descend into {type(doc).__name__} at {part!r}")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _get(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, insert=True), value)
    else:
        raise ValueError(f"cannot add to {type(parent).__name__}")
    return doc


def _remove(doc: Any, parts: list[str]) -> tuple[Any, Any]:
    if not parts:
        return None, doc
    parent = _get(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise KeyError(f"no key {last!r} to remove")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, insert=False))
    raise ValueError(f"cannot remove from {type(parent).__name__}")
