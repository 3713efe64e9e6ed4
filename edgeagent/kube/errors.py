"""Errors of the Kubernetes backend, converted from kubernetes-asyncio and aiohttp at the adapter.

Nothing above :mod:`edgeagent.kube.client` sees an ``ApiException`` or an
``aiohttp.ClientError``; it sees these, with the API's own status code,
reason and message, and whether retrying can help::

    DeploymentError (edgeagent.errors)
    ├── KubeError                 the cluster could not be reached or configured
    │   ├── KubeConfigError       no kubeconfig / in-cluster config could be loaded
    │   └── ApiError              the API server answered with an error (``status``,
    │                             ``reason``, ``message``); transient for 429 and
    │                             5xx, permanent for other 4xx
    │       └── ApiUnreachable    connection refused/reset, TLS failure, timeout
    └── ApplyError (edgeagent.errors)
        └── ApplyRefused          some objects were refused (``conditions``); it is
                                  transient when every refusal was transient

Both trees end in :class:`edgeagent.errors.DeploymentError`, so the reconciler
turns them into ErrApplied with a message and retries the transient ones.
"""

from __future__ import annotations

from edgeagent.errors import ApplyError, DeploymentError
from protocol.messages import ResourceCondition

_TRANSIENT_STATUSES = frozenset({408, 429})


class KubeError(DeploymentError):
    """The Kubernetes API could not be used."""


class KubeConfigError(KubeError):
    transient = False


class ApiError(KubeError):
    """The API server refused a request, or could not be reached (``status`` 0)."""

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.transient = status == 0 or status >= 500 or status in _TRANSIENT_STATUSES

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


class ApiUnreachable(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=0, reason="Unreachable")


class ApplyRefused(ApplyError):
    """Objects of a deployment were refused; ``transient`` if retrying may help."""

    def __init__(
        self, message: str, *, conditions: tuple[ResourceCondition, ...], transient: bool
    ) -> None:
        super().__init__(message, conditions=conditions)
        self.transient = transient
