"""Messages on the bus between agents and the control plane.

Each message type has a short ``KIND`` tag used by the codec. Fields left at
their default are not sent, so a heartbeat with nothing to say is a handful of
bytes, and new optional fields do not break older peers (unknown fields are
ignored on decode).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from protocol.classes import ClassSchema
from protocol.models import DeploymentOptions
from protocol.states import State


class WireMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    KIND: ClassVar[str] = ""


class SchemaMessage(WireMessage):
    """The class schema; published on ``shoal.v1.schema``."""

    KIND: ClassVar[str] = "schema"
    class_schema: ClassSchema


class DesiredBundle(WireMessage):
    """Desired state of one bundle for one class (or one cluster).

    ``rev`` orders messages for the same subject: a receiver keeps the highest.
    ``deleted`` is the tombstone: the bundle no longer goes to these clusters.
    ``depends_on`` names bundles that must be Ready on the cluster before this
    one is applied (Fleet's ``dependsOn``, selectors already resolved to names);
    ``paused`` tells an agent to keep what it has applied of the bundle rather
    than roll out this deployment (Fleet's ``paused``). Neither is part of the
    deployment ID: they say when, not what.
    """

    KIND: ClassVar[str] = "desired"
    bundle: str
    rev: int
    deployment_id: str = ""
    options: DeploymentOptions = Field(default_factory=DeploymentOptions)
    deleted: bool = False
    depends_on: tuple[str, ...] = ()
    paused: bool = False


class ResourceCondition(WireMessage):
    """One Kubernetes object that is not ready or was modified, and why."""

    KIND: ClassVar[str] = "resource"
    kind: str
    name: str
    namespace: str = ""
    api_version: str = ""
    reason: str = ""


class BundleStatus(WireMessage):
    KIND: ClassVar[str] = "bundle_status"
    bundle: str
    deployment_id: str
    state: State
    message: str = ""
    non_ready: tuple[ResourceCondition, ...] = ()
    modified: tuple[ResourceCondition, ...] = ()


class StatusReport(WireMessage):
    """An agent's complete status; sent when anything in it changed.

    The cluster is named by the subject, which NATS permissions tie to the
    agent's identity. The status stream keeps the last report per cluster,
    which is how a restarted control plane recovers every cluster's state.
    """

    KIND: ClassVar[str] = "status"
    seq: int
    sent_at: float
    bundles: tuple[BundleStatus, ...] = ()


class Heartbeat(WireMessage):
    """Liveness; ``status_seq`` lets the control plane notice a report it missed."""

    KIND: ClassVar[str] = "hb"
    seq: int
    status_seq: int = 0


class RegisterRequest(WireMessage):
    KIND: ClassVar[str] = "register"
    token: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class RegisterReply(WireMessage):
    KIND: ClassVar[str] = "registered"
    cluster_id: str
    secret: str
    shard: int


class HelloRequest(WireMessage):
    """Sent by a registered agent on every start: proves identity, updates labels."""

    KIND: ClassVar[str] = "hello"
    secret: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class HelloReply(WireMessage):
    KIND: ClassVar[str] = "hello_ok"
    name: str
    shard: int


class ErrorReply(WireMessage):
    """A request was refused; ``code`` is stable for scripts, ``error`` for people."""

    KIND: ClassVar[str] = "error"
    code: str
    error: str
