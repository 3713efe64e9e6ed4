"""Has someone changed what shoal applied? Field paths where the live object drifted.

The agent reports a deployment Modified when a live object no longer holds what
shoal applied. A false Modified is worse than useless: operators learn to
ignore the state, and "Modified for no reason" is the complaint Fleet users
raise most. So the comparison is deliberately one-sided and forgiving about
what the API server does on its own, while still catching real edits:

- only fields present in the applied manifest are compared; whatever exists
  only in the live object (status, server defaults, fields of other managers,
  labels added by others, sidecars injected into a pod template) is ignored;
- lists of maps are matched by a merge key (``name``, ``containerPort``,
  ``port`` or ``mountPath``) and compared element by element as subsets;
  lists of scalars must be equal, in order;
- server canonicalisation is undone before scalars are compared: resource
  quantities (``0.5`` = ``500m``, ``1Gi`` = ``1024Mi``), ports given as strings,
  explicit nulls, and zero values the server omits;
- Fleet's ``diff.comparePatches`` (JSON-patch operations and JSON pointers) are
  applied to both sides before comparing, e.g. to hide ``/spec/replicas`` of a
  Deployment scaled by an HorizontalPodAutoscaler.

Pure: plain dicts in, a sorted list of paths out; the caller's dicts are never
modified.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from protocol.models import ComparePatch, ComparePatchOperation

DELETED = "(object deleted)"

# Written by the API server, never by whoever applies the object.
_SERVER_METADATA = frozenset(
    {
        "managedFields",
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)
# Identify the object rather than describe it; the live copy was read by them.
_IDENTITY = frozenset({"apiVersion", "kind", "status"})

_PORT_KEYS = frozenset({"port", "targetPort", "containerPort", "hostPort", "nodePort"})
# Values of maps under these keys are resource quantities (container resources,
# PVC requests, ResourceQuota hard limits, LimitRange bounds).
_QUANTITY_PARENTS = frozenset(
    {"requests", "limits", "hard", "capacity", "default", "defaultRequest", "max", "min"}
)
_QUANTITY_KEYS = frozenset({"storage", "sizeLimit"})
# Tried in order; the first every applied element has, with unique values, wins.
_MERGE_KEYS = ("name", "containerPort", "port", "mountPath")

_QUANTITY_RE = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<exponent>[eE][+-]?\d+)|(?P<binary>[KMGTPE]i)|(?P<decimal>[numkMGTPE]))?$"
)
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_/-]+$")


def differences(
    applied: Mapping[str, Any],
    live: Mapping[str, Any] | None,
    *,
    compare_patches: Sequence[ComparePatch] = (),
) -> list[str]:
    """Field paths where ``live`` no longer holds what was ``applied``.

    Paths read like ``spec.replicas``, ``metadata.labels.app`` or
    ``spec.template.spec.containers[name=web].image``. An empty list means
    unmodified; ``live`` None means the object is gone: ``['(object deleted)']``.
    """
    if live is None:
        return [DELETED]
    want: Any = applied
    have: Any = live
    for patch in compare_patches:
        if _patch_applies(patch, applied, live):
            want = _apply_compare_patch(want, patch)
            have = _apply_compare_patch(have, patch)
    if not isinstance(want, Mapping):
        return []  # a patch removed the whole document: nothing left to compare
    if not isinstance(have, Mapping):
        return [DELETED]
    found: list[str] = []
    for key, value in want.items():
        if key in _IDENTITY:
            continue
        owned = value
        if key == "metadata" and isinstance(value, Mapping):
            owned = {k: v for k, v in value.items() if k not in _SERVER_METADATA}
        _compare_field(owned, have, key, path="", parent=None, out=found)
    return sorted(set(found))


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity as a number (``"500m"`` -> 0.5), None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    match = _QUANTITY_RE.match(text)
    if match is None:
        return None
    try:
        number = Decimal(match["number"])
        if match["exponent"]:
            return number.scaleb(int(match["exponent"][1:]))
    except (InvalidOperation, ValueError):
        return None
    if match["binary"]:
        return number * (1 << _BINARY_SUFFIXES[match["binary"]])
    if match["decimal"]:
        return number.scaleb(_DECIMAL_SUFFIXES[match["decimal"]])
    return number


# -- comparison ---------------------------------------------------------------


def _compare_field(
    want: Any,
    container: Mapping[str, Any],
    key: str,
    *,
    path: str,
    parent: str | None,
    out: list[str],
) -> None:
    child = _child(path, key)
    have = container.get(key)
    if have is None and not isinstance(want, Mapping):
        if not _is_zero(want):
            out.append(child)
        return
    _compare(want, have, child, key=key, parent=parent, out=out)


def _compare(
    want: Any, have: Any, path: str, *, key: str | None, parent: str | None, out: list[str]
) -> None:
    if want is None:
        return  # an explicit null in a manifest means "absent"
    if isinstance(want, Mapping):
        if have is None:
            have = {}  # report the missing leaves, not the whole map
        if not isinstance(have, Mapping):
            out.append(path)
            return
        for k, v in want.items():
            _compare_field(v, have, str(k), path=path, parent=key, out=out)
    elif isinstance(want, list | tuple):
        _compare_list(list(want), have, path, key=key, parent=parent, out=out)
    elif not _scalar_equal(want, have, key=key, parent=parent):
        out.append(path)


def _compare_list(
    want: list[Any],
    have: Any,
    path: str,
    *,
    key: str | None,
    parent: str | None,
    out: list[str],
) -> None:
    if have is None:
        have = []
    if not isinstance(have, list | tuple):
        out.append(path)
        return
    have = list(have)
    if not all(isinstance(item, Mapping) for item in want):
        # Scalar lists (args, command, finalizers...) are atomic: same items, same order.
        if len(want) != len(have) or any(
            _differs(w, h, key=key, parent=parent) for w, h in zip(want, have, strict=True)
        ):
            out.append(path)
        return
    if not want:
        return
    merge_key = _merge_key(want)
    if merge_key is not None:
        by_key: dict[tuple[str, str], Mapping[str, Any]] = {}
        for item in have:
            if isinstance(item, Mapping) and item.get(merge_key) is not None:
                by_key.setdefault(_merge_value(merge_key, item), item)
        for item in want:
            item_path = f"{path}[{_merge_label(merge_key, item)}]"
            match = by_key.get(_merge_value(merge_key, item))
            if match is None:
                out.append(item_path)
            else:
                _compare(item, match, item_path, key=key, parent=parent, out=out)
    elif len(want) == len(have):
        for index, (w, h) in enumerate(zip(want, have, strict=True)):
            _compare(w, h, f"{path}[{index}]", key=key, parent=parent, out=out)
    else:
        # Admission controllers append to some keyless lists (a pod's tolerations):
        # each applied element must still be found somewhere in the live list.
        for index, w in enumerate(want):
            if all(_differs(w, h, key=key, parent=parent) for h in have):
                out.append(f"{path}[{index}]")


def _differs(want: Any, have: Any, *, key: str | None, parent: str | None) -> bool:
    found: list[str] = []
    _compare(want, have, "", key=key, parent=parent, out=found)
    return bool(found)


def _merge_key(items: list[Any]) -> str | None:
    for candidate in _MERGE_KEYS:
        values = [_merge_value(candidate, item) for item in items]
        if all(item.get(candidate) is not None for item in items) and len(set(values)) == len(
            values
        ):
            return candidate
    return None


def _merge_value(merge_key: str, item: Mapping[str, Any]) -> tuple[str, str]:
    value = item.get(merge_key)
    if merge_key in _PORT_KEYS:
        port = _as_port(value)
        return (str(port if port is not None else value), str(item.get("protocol") or "TCP"))
    return (str(value), "")


def _merge_label(merge_key: str, item: Mapping[str, Any]) -> str:
    label = f"{merge_key}={item.get(merge_key)}"
    protocol = item.get("protocol")
    if merge_key in _PORT_KEYS and protocol and protocol != "TCP":
        label += f",protocol={protocol}"
    return label


def _scalar_equal(want: Any, have: Any, *, key: str | None, parent: str | None) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if type(want) is type(have) and want == have:
        return True
    if key in _PORT_KEYS:
        want_port, have_port = _as_port(want), _as_port(have)
        if want_port is not None and want_port == have_port:
            return True
    if key in _QUANTITY_KEYS or parent in _QUANTITY_PARENTS:
        want_quantity, have_quantity = parse_quantity(want), parse_quantity(have)
        if want_quantity is not None and want_quantity == have_quantity:
            return True
    if isinstance(want, int | float) and isinstance(have, int | float):
        return want == have
    return False


def _as_port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _is_zero(value: Any) -> bool:
    """Values the API server leaves out of the live object (Go's omitempty)."""
    if isinstance(value, Mapping):
        return all(_is_zero(v) for v in value.values())
    if isinstance(value, bool):
        return not value
    return value is None or value in ("", 0) or (isinstance(value, list | tuple) and not value)


def _child(path: str, key: str) -> str:
    segment = key if _PLAIN_KEY_RE.match(key) else f'["{key}"]'
    if not path:
        return segment
    return f"{path}{segment}" if segment.startswith("[") else f"{path}.{segment}"


# -- compare patches ----------------------------------------------------------


def _patch_applies(
    patch: ComparePatch, applied: Mapping[str, Any], live: Mapping[str, Any]
) -> bool:
    def metadata(field: str) -> Any:
        for obj in (applied, live):
            meta = obj.get("metadata")
            if isinstance(meta, Mapping) and meta.get(field):
                return meta[field]
        return None

    wanted = (
        (patch.api_version, applied.get("apiVersion") or live.get("apiVersion")),
        (patch.kind, applied.get("kind") or live.get("kind")),
        (patch.name, metadata("name")),
        (patch.namespace, metadata("namespace")),
    )
    return all(not selector or selector == actual for selector, actual in wanted)


def _apply_compare_patch(doc: Any, patch: ComparePatch) -> Any:
    """Both the operations and the pointers of ``patch`` applied to a copy of ``doc``.

    A failed ``test`` operation leaves the operations out, as JSON patch
    prescribes for a whole patch; operations whose target is absent are no-ops.
    """
    work = _thaw(doc)
    for operation in patch.operations:
        ok, work = _apply_operation(work, operation)
        if not ok:
            work = _thaw(doc)
            break
    for pointer in patch.json_pointers:
        _, work = _apply_operation(work, ComparePatchOperation(op="remove", path=pointer))
    return work


def _apply_operation(doc: Any, operation: ComparePatchOperation) -> tuple[bool, Any]:
    tokens = _parse_pointer(operation.path)
    if tokens is None:
        return True, doc
    if not tokens:
        if operation.op in ("add", "replace"):
            return True, _thaw(operation.value)
        if operation.op == "test":
            return _thaw(operation.value) == doc, doc
        return True, doc
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if operation.op == "test":
        present, current = _lookup(parent, last)
        return present and current == _thaw(operation.value), doc
    if isinstance(parent, dict):
        if operation.op == "remove":
            parent.pop(last, None)
        elif operation.op == "add" or (operation.op == "replace" and last in parent):
            parent[last] = _thaw(operation.value)
    elif isinstance(parent, list):
        index = _index(last, len(parent), allow_end=operation.op == "add")
        if index is None:
            return True, doc
        if operation.op == "remove" and index < len(parent):
            del parent[index]
        elif operation.op == "replace" and index < len(parent):
            parent[index] = _thaw(operation.value)
        elif operation.op == "add":
            parent.insert(index, _thaw(operation.value))
    return True, doc


def _parse_pointer(pointer: str) -> list[str] | None:
    """RFC 6901 reference tokens; None for a malformed pointer."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        return None
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/")]


def _resolve(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        present, doc = _lookup(doc, token)
        if not present:
            return None
    return doc


def _lookup(container: Any, token: str) -> tuple[bool, Any]:
    if isinstance(container, dict):
        return (token in container), container.get(token)
    if isinstance(container, list):
        index = _index(token, len(container), allow_end=False)
        if index is not None and index < len(container):
            return True, container[index]
    return False, None


def _index(token: str, length: int, *, allow_end: bool) -> int | None:
    if token == "-":
        return length if allow_end else None
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        return None
    index = int(token)
    return index if index <= length else None


def _thaw(value: Any) -> Any:
    """A deep, mutable copy made of dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value
