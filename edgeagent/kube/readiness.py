"""Is a live Kubernetes object ready? One short reason when it is not.

The agent reports a deployment Ready only when every object it applied is
ready, and NotReady with the first reason otherwise, so this module decides
what "ready" means per kind. The rules follow kstatus (sigs.k8s.io/cli-utils),
which is what Flux, kpt and Fleet's users have come to expect:

- any object: not ready while being deleted or while its controller has not yet
  observed the latest generation;
- workloads (Deployment, StatefulSet, DaemonSet, Job, Pod) and PVCs, Services,
  CRDs and Namespaces: kind-specific rules on ``status``;
- anything else: its ``Ready``/``Available`` conditions if it has them, and the
  kstatus "abnormal-true" conditions ``Reconciling`` and ``Stalled``; an object
  without status (ConfigMap, Secret, RBAC) is ready as soon as it exists.

``ignore_conditions`` follows Fleet's ``ignore.conditions``: a condition that
matches every key of one entry is treated as absent.

Everything here is pure: plain dicts in, a string or None out. Malformed
status fields are read as absent rather than raising.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

_Conditions = dict[str, Mapping[str, Any]]
_Rule = Callable[[Mapping[str, Any], _Conditions], "str | None"]

# Kinds whose controller always writes status.observedGeneration once it has
# acted, so an absent observedGeneration means "not yet observed".
_CONTROLLED_WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})


def describe(obj: Mapping[str, Any]) -> str:
    """``Kind namespace/name`` (or ``Kind name`` when cluster-scoped), for messages."""
    kind = obj.get("kind") or "Object"
    name = _get(obj, "metadata", "name") or "<unnamed>"
    namespace = _get(obj, "metadata", "namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def assess(
    obj: Mapping[str, Any], *, ignore_conditions: Sequence[Mapping[str, str]] = ()
) -> str | None:
    """None when the live object is ready; otherwise a short human reason.

    For example ``'Deployment rollout: 1 of 3 replicas updated'`` or
    ``'PVC is Pending, not Bound'``.
    """
    kind = obj.get("kind")
    kind = kind if isinstance(kind, str) else ""
    if _get(obj, "metadata", "deletionTimestamp"):
        return f"{kind or 'object'} is being deleted"

    generation = _int(_get(obj, "metadata", "generation"))
    observed = _int(_get(obj, "status", "observedGeneration"))
    rule = _RULES.get((_group(obj), kind))
    if generation is not None:
        must_observe = observed is not None or (rule is not None and kind in _CONTROLLED_WORKLOADS)
        if must_observe and (observed or 0) < generation:
            return f"{kind} controller has not yet observed generation {generation}"

    conditions = _conditions(obj, ignore_conditions)
    stalled = conditions.get("Stalled")
    if _is_true(stalled):
        return _with_detail("Stalled", stalled)
    reason = rule(obj, conditions) if rule is not None else _generic(conditions)
    if reason is None and _is_true(reconciling := conditions.get("Reconciling")):
        return _with_detail("Reconciling", reconciling)
    return reason


# -- kind rules ---------------------------------------------------------------


def _deployment(obj: Mapping[str, Any], conditions: _Conditions) -> str | None:
    progressing = conditions.get("Progressing")
    if (
        progressing is not None
        and progressing.get("reason") == "ProgressDeadlineExceeded"
        and str(progressing.get("status")) == "False"
    ):
        return _with_detail("Deployment rollout failed: progress deadline exceeded", progressing)

    want = _replicas(obj)
    total = _status_int(obj, "replicas")
    updated = _status_int(obj, "updatedReplicas")
    available = _status_int(obj, "availableReplicas")
    if updated < want:
        return f"Deployment rollout: {updated} of {want} replicas updated"
    if total > updated:
        return f"Deployment rollout: waiting for {total - updated} old replica(s) to terminate"
    if available < want:
        return f"Deployment rollout: {available} of {want} updated replicas available"
    return None


def _statefulset(obj: Mapping[str, Any], conditions: _Conditions) -> str | None:
    want = _replicas(obj)
    total = _status_int(obj, "replicas")
    ready = _status_int(obj, "readyReplicas")
    updated = _status_int(obj, "updatedReplicas")
    if total < want:
        return f"StatefulSet: {total} of {want} replicas created"
    if ready < want:
        return f"StatefulSet: {ready} of {want} replicas ready"
    if total > want:
        return f"StatefulSet: waiting for {total - want} extra replica(s) to terminate"
    if _get(obj, "spec", "updateStrategy", "type") == "OnDelete":
        # Pods are replaced only when someone deletes them: nothing to wait for.
        return None
    partition = _int(_get(obj, "spec", "updateStrategy", "rollingUpdate", "partition")) or 0
    if partition > 0:
        # Only ordinals >= partition are updated; the rest stay at the old revision.
        expected = max(want - partition, 0)
        if updated < expected:
            return f"StatefulSet partitioned rollout: {updated} of {expected} replicas updated"
        return None
    if updated < want:
        return f"StatefulSet rollout: {updated} of {want} replicas updated"
    current_revision = _get(obj, "status", "currentRevision")
    update_revision = _get(obj, "status", "updateRevision")
    if current_revision != update_revision:
        return f"StatefulSet rollout: revision {update_revision} is not yet current"
    return None


def _daemonset(obj: Mapping[str, Any], conditions: _Conditions) -> str | None:
    desired = _int(_get(obj, "status", "desiredNumberScheduled"))
    if desired is None:
        return "DaemonSet has not been scheduled by its controller yet"
    for field, what in (
        ("currentNumberScheduled", "scheduled"),
        ("updatedNumberScheduled", "updated"),
        ("numberAvailable", "available"),
        ("numberReady", "ready"),
    ):
        have = _status_int(obj, field)
        if have < desired:
            return f"DaemonSet rollout: {have} of {desired} pods {what}"
    return None


def _job(obj: Mapping[str, Any], conditions: _Conditions) -> str | None:
    if _is_true(conditions.get("Complete")):
        return None
    failed = conditions.get("Failed")
    if failed is not None and _is_true(failed):
        detail = failed.get("message") or failed.get("reason") or "no reason given"
        return f"Job failed: {detail}"
    return "Job running"


def _pod(obj: Mapping[str, Any], conditions: _Conditions) -> str | None:
    phase = _get(obj, "status", "phase")
    if phase == "Succeeded" or _is_true(conditions.get("Ready")):
        return None
    if phase == "Failed":
        detail = _get(obj, "status", "message") or _get(obj, "status", "reason")
        return f"Pod failed: {detail}" if detail else "Pod failed"
    crashing = _crash_looping(obj)
    if crashing:
        return f"Pod containers in CrashLoopBackOff: {', '.join(crashing)}"
    scheduled = conditions.get("PodScheduled")
    if scheduled is not None and str(scheduled.get("status")) == "False":
        return _with_detail("Pod is not scheduled", scheduled)
    if phase == "Running":
        return "Pod is Running but not Ready"
    return f"Pod is {phase or 'not yet started'}"


def _crash_looping(obj: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for key in ("initContainerStatuses", "containerStatuses"):
        statuses = _get(obj, "status", key)
        if not isinstance(statuses, list):
            continue
        for status in statuses:
            reason = _get(status, "state", "waiting", "reason")
            if reason == "CrashLoopBackOff":
                names.append(str(_get(status, "name")))
    return names


def _pvc(obj: Mapping[str, Any], conditions: _Conditions) -> str | None:
    phase = _get(obj, "status", "phase")
    if phase == "Bound":
        return None
    return f"PVC is {phase or 'without a phase'}, not Bound"


def _service(obj: Mapping[str, Any], conditions: _Conditions) -> str | None:
    if _get(obj, "spec", "type") != "LoadBalancer":
        return None
    if _get(obj, "status", "loadBalancer", "ingress"):
        return None
    return "Service of type LoadBalancer has no ingress address yet"


def _crd(obj: Mapping[str, Any], conditions: _Conditions) -> str | None:
    names = conditions.get("NamesAccepted")
    if names is not None and str(names.get("status")) == "False":
        return _with_detail("CRD names not accepted", names)
    if not _is_true(conditions.get("Established")):
        return "CRD is not yet Established"
    return None


def _namespace(obj: Mapping[str, Any], conditions: _Conditions) -> str | None:
    phase = _get(obj, "status", "phase")
    if phase is None or phase == "Active":
        return None
    return f"Namespace is {phase}"


def _generic(conditions: _Conditions) -> str | None:
    for kind in ("Ready", "Available"):
        condition = conditions.get(kind)
        if condition is not None and not _is_true(condition):
            return _with_detail(f"{kind} is {condition.get('status') or 'Unknown'}", condition)
    return None


_RULES: dict[tuple[str, str], _Rule] = {
    ("apps", "Deployment"): _deployment,
    ("extensions", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("extensions", "DaemonSet"): _daemonset,
    ("batch", "Job"): _job,
    ("", "Pod"): _pod,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "Service"): _service,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
    ("", "Namespace"): _namespace,
}


# -- helpers ------------------------------------------------------------------


def _group(obj: Mapping[str, Any]) -> str:
    api_version = obj.get("apiVersion")
    if not isinstance(api_version, str) or "/" not in api_version:
        return ""
    return api_version.split("/", 1)[0]


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _status_int(obj: Mapping[str, Any], field: str) -> int:
    return _int(_get(obj, "status", field)) or 0


def _replicas(obj: Mapping[str, Any]) -> int:
    replicas = _int(_get(obj, "spec", "replicas"))
    return 1 if replicas is None else replicas  # the controllers' default


def _conditions(obj: Mapping[str, Any], ignore: Sequence[Mapping[str, str]]) -> _Conditions:
    found: _Conditions = {}
    raw = _get(obj, "status", "conditions")
    if not isinstance(raw, list):
        return found
    for condition in raw:
        if not isinstance(condition, Mapping) or not isinstance(condition.get("type"), str):
            continue
        if any(_matches(condition, entry) for entry in ignore):
            continue
        found.setdefault(condition["type"], condition)
    return found


def _matches(condition: Mapping[str, Any], entry: Mapping[str, str]) -> bool:
    # An empty entry would ignore every condition; it is far more likely a mistake.
    return bool(entry) and all(str(condition.get(k)) == str(v) for k, v in entry.items())


def _is_true(condition: Mapping[str, Any] | None) -> bool:
    return condition is not None and str(condition.get("status")) == "True"


def _with_detail(text: str, condition: Mapping[str, Any] | None) -> str:
    if condition is None:
        return text
    parts = [str(p) for p in (condition.get("reason"), condition.get("message")) if p]
    return f"{text}: {': '.join(parts)}" if parts else text
