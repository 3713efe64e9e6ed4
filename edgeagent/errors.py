"""Errors of the edge agent.

Third-party errors (nats, OS, YAML) are converted where they enter the agent,
so callers handle this tree only. Errors that describe a bundle deployment
(render, blob, apply) are *data*: the reconciler turns them into a state and a
message in the status report instead of letting them escape::

    AgentError
    ├── IdentityError            the agent cannot establish who it is
    │   ├── RegistrationRejected the control plane refused the token (``code``)
    │   └── HelloRejected        the control plane refused the saved identity (``code``)
    ├── BusError                 NATS or JetStream failed
    │   ├── BusUnavailable       not connected, timed out or no responders
    │   └── BusRejected          JetStream refused a request (``code`` when known)
    ├── StateStoreError          the state directory cannot be read or written
    └── DeploymentError          a bundle cannot be deployed (becomes status data)
        ├── BlobError            resources missing or not matching their manifest ID
        ├── RenderError          a resource file is not valid (names file and document)
        └── ApplyError           the cluster refused objects (``conditions``)
"""

from __future__ import annotations

from protocol.messages import ResourceCondition


class AgentError(Exception):
    """Base of every error the edge agent raises on purpose."""


class IdentityError(AgentError):
    """Registration or hello failed; ``code`` is the control plane's stable code."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class RegistrationRejected(IdentityError):
    pass


class HelloRejected(IdentityError):
    pass


class BusError(AgentError):
    pass


class BusUnavailable(BusError):
    pass


class BusRejected(BusError):
    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class StateStoreError(AgentError):
    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class DeploymentError(AgentError):
    """A bundle deployment failed; ``transient`` ones are retried with backoff."""

    transient = True


class BlobError(DeploymentError):
    def __init__(self, message: str, *, manifest_id: str, transient: bool = True) -> None:
        super().__init__(message)
        self.manifest_id = manifest_id
        self.transient = transient


class RenderError(DeploymentError):
    """A resource is not a valid Kubernetes object; retrying cannot help."""

    transient = False

    def __init__(self, message: str, *, file: str, document: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.document = document


class ApplyError(DeploymentError):
    """The cluster refused the deployment; nothing of it was applied."""

    def __init__(self, message: str, *, conditions: tuple[ResourceCondition, ...] = ()) -> None:
        super().__init__(message)
        self.conditions = conditions
