"""Errors of the control plane.

::

    ControlPlaneError
    ├── EmbeddedNatsError     the embedded nats-server could not start or died
    │   └── PortInUseError    its port is taken (the message says what to pass)
    ├── BusError              NATS or JetStream refused or timed out
    └── RequestRejected       an admin or agent request is refused; ``code`` is stable
        ├── BundleInvalid     a bundle failed validation (names the file and field)
        ├── NotFound          no such bundle, cluster, group or token
        └── AuthError         an unknown, expired or revoked token or credential
"""

from __future__ import annotations


class ControlPlaneError(Exception):
    """Base of every error the control plane raises on purpose."""


class EmbeddedNatsError(ControlPlaneError):
    pass


class PortInUseError(EmbeddedNatsError):
    def __init__(self, message: str, *, port: int) -> None:
        super().__init__(message)
        self.port = port


class BusError(ControlPlaneError):
    pass


class RequestRejected(ControlPlaneError):
    code = "rejected"


class BundleInvalid(RequestRejected):
    code = "invalid"


class NotFound(RequestRejected):
    code = "not_found"


class AuthError(RequestRejected):
    code = "unauthorized"
