"""NATS subject names: the whole layout in one place.

The layout is what makes invariant 3 expressible as NATS permissions: an agent
subscribes to ``shoal.v1.schema``, ``shoal.v1.desired.<its class>.*`` and
``shoal.v1.cluster.<its id>.>``, and publishes only on its own status and
heartbeat subjects and its own hello request.

=============================================  ===================================
subject                                        carries
=============================================  ===================================
``shoal.v1.schema``                            :class:`ClassSchema`, last kept
``shoal.v1.desired.<class>.<bundle>``          :class:`DesiredBundle`, last kept
``shoal.v1.cluster.<id>.desired.<bundle>``     per-cluster override, last kept
``shoal.v1.status.<shard>.<id>``               :class:`StatusReport`, last kept
``shoal.v1.hb.<shard>.<id>``                   :class:`Heartbeat`, core NATS only
``shoal.v1.register``                          registration request/reply
``shoal.v1.agent.<id>.hello``                  agent start-up request/reply
``shoal.v1.admin.<op>``                        admin API request/reply
=============================================  ===================================
"""

from __future__ import annotations

import re

from protocol.errors import DecodeError

PREFIX = "shoal.v1"
DESIRED_STREAM = "SHOAL_DESIRED"
STATUS_STREAM = "SHOAL_STATUS"

SCHEMA = f"{PREFIX}.schema"
REGISTER = f"{PREFIX}.register"
DESIRED_ALL = f"{PREFIX}.desired.>"
CLUSTER_DESIRED_ALL = f"{PREFIX}.cluster.*.desired.>"
STATUS_ALL = f"{PREFIX}.status.>"
HEARTBEAT_ALL = f"{PREFIX}.hb.>"

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")
_SHARD_RE = re.compile(r"^[0-9]{1,6}\Z")


def _token(value: str, what: str) -> str:
    if not _TOKEN_RE.match(value):
        raise ValueError(f"{what} {value!r} cannot be a subject token")
    return value


def desired(class_id: str, bundle: str) -> str:
    return f"{PREFIX}.desired.{_token(class_id, 'class')}.{_token(bundle, 'bundle')}"


def desired_class(class_id: str) -> str:
    return f"{PREFIX}.desired.{_token(class_id, 'class')}.*"


def cluster_desired(cluster_id: str, bundle: str) -> str:
    return f"{PREFIX}.cluster.{_token(cluster_id, 'cluster')}.desired.{_token(bundle, 'bundle')}"


def cluster_desired_all(cluster_id: str) -> str:
    return f"{PREFIX}.cluster.{_token(cluster_id, 'cluster')}.desired.*"


def cluster_all(cluster_id: str) -> str:
    return f"{PREFIX}.cluster.{_token(cluster_id, 'cluster')}.>"


def status(shard: int, cluster_id: str) -> str:
    return f"{PREFIX}.status.{shard}.{_token(cluster_id, 'cluster')}"


def status_shard(shard: int) -> str:
    return f"{PREFIX}.status.{shard}.*"


def heartbeat(shard: int, cluster_id: str) -> str:
    return f"{PREFIX}.hb.{shard}.{_token(cluster_id, 'cluster')}"


def heartbeat_shard(shard: int) -> str:
    return f"{PREFIX}.hb.{shard}.*"


def hello(cluster_id: str) -> str:
    return f"{PREFIX}.agent.{_token(cluster_id, 'cluster')}.hello"


# Control-plane replicas ask each other for their shards' status here.
INTERNAL_SUMMARY = f"{PREFIX}.internal.summary"


def admin(op: str) -> str:
    return f"{PREFIX}.admin.{op}"


def parse_cluster_subject(subject: str) -> tuple[int, str]:
    """``(shard, cluster_id)`` of a status or heartbeat subject."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[2] not in ("status", "hb") or f"{parts[0]}.{parts[1]}" != PREFIX:
        raise DecodeError(f"not a status or heartbeat subject: {subject!r}")
    if not _SHARD_RE.match(parts[3]) or not _TOKEN_RE.match(parts[4]):
        raise DecodeError(f"malformed shard or cluster in subject {subject!r}")
    return int(parts[3]), parts[4]


def parse_desired_subject(subject: str) -> str:
    """The bundle name at the end of a desired-state subject."""
    bundle = subject.rsplit(".", 1)[-1]
    if not _TOKEN_RE.match(bundle):
        raise DecodeError(f"malformed desired-state subject {subject!r}")
    return bundle


# JetStream object store holding bundle resources, keyed by manifest ID.
BLOB_BUCKET = "shoal-blobs"

# A replica that received a git webhook asks the leader to poll here (core NATS).
INTERNAL_GITPOLL = f"{PREFIX}.internal.gitpoll"
