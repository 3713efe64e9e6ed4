"""The seam between the reconciler and a cluster: the :class:`ClusterBackend` Protocol.

The reconciler decides *what* should run; a backend makes it so on one cluster
and says how it is doing. The simulated backend (an in-memory cluster, used by
``shoal demo``, benchmarks and tests) and the Kubernetes backend (server-side
apply, drift watches) implement the same four methods, so the reconciler is
the same code for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from protocol.messages import ResourceCondition
from protocol.models import DeploymentOptions
from protocol.states import State


@dataclass(frozen=True)
class Deployment:
    """One bundle's rendered objects, as they should exist on the cluster.

    ``objects`` may be shared with other deployments (agents in one process
    given the same deployment share one placement): a backend never modifies
    them; it copies what it must change.
    """

    bundle: str
    deployment_id: str
    options: DeploymentOptions
    objects: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Capabilities:
    """What Helm templates see of the cluster (``.Capabilities``): its version and APIs.

    Charts gate objects on these (``.Capabilities.APIVersions.Has
    "monitoring.coreos.com/v1"``), so the agent renders with its own cluster's.
    ``kube_version`` None leaves Helm's default.
    """

    kube_version: str | None = None
    api_versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observation:
    """What a backend sees of a deployment: READY, NOT_READY or MODIFIED, and why."""

    state: State
    non_ready: tuple[ResourceCondition, ...] = ()
    modified: tuple[ResourceCondition, ...] = ()


def condition_of(obj: dict[str, Any], reason: str) -> ResourceCondition:
    """The status-report form of one object."""
    meta = obj.get("metadata") or {}
    return ResourceCondition(
        kind=str(obj.get("kind", "")),
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace") or ""),
        api_version=str(obj.get("apiVersion", "")),
        reason=reason,
    )


class ClusterBackend(Protocol):
    # False for a backend whose calls never wait on I/O (the simulated one): the
    # reconciler sets no apply_timeout deadline around them, which at fleet scale
    # would cost a timer per call for a call that cannot hang.
    waits_on_io: bool

    async def apply(self, deployment: Deployment) -> None:
        """Make the cluster hold exactly ``deployment`` for its bundle.

        All or nothing: raise :class:`edgeagent.errors.ApplyError` with
        per-object conditions, having changed nothing, if any object is refused.
        """
        ...

    async def remove(
        self, bundle: str, *, keep_resources: bool, delete_namespace: str = ""
    ) -> None:
        """Forget ``bundle``; delete its objects unless ``keep_resources``.

        ``delete_namespace`` (Fleet's ``deleteNamespace``) names the bundle's
        namespace, to delete as well if the agent created it for this bundle.
        """
        ...

    async def observe(self, deployment: Deployment) -> Observation:
        """Readiness and drift of an applied deployment."""
        ...

    async def deployed_bundles(self) -> set[str]:
        """Bundles the cluster holds, so an agent can prune after a restart."""
        ...

    async def capabilities(self) -> Capabilities:
        """The cluster's version and served API group-versions, for Helm's ``.Capabilities``."""
        ...

    async def read_key(self, kind: str, namespace: str, name: str, key: str) -> str | None:
        """The text under ``key`` of a ``ConfigMap`` or ``Secret`` (decoded) on the cluster.

        ``None`` when the object or the key is not there. Helm's ``valuesFrom``
        reads values this way, from the cluster the bundle goes to.
        """
        ...
