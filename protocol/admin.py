"""The admin API the CLI speaks to the control plane over NATS request/reply.

Each operation has a request model and a reply model; the subject is
``shoal.v1.admin.<op>``. A refused request gets an :class:`ErrorReply`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, Field

from protocol.gitrepos import GitCredentials, GitRepoSpec, GitRepoStatus
from protocol.messages import WireMessage
from protocol.models import BundleSpec, ClusterGroup
from protocol.states import State


class TokenCreate(WireMessage):
    KIND: ClassVar[str] = "token_create"
    OP: ClassVar[str] = "token.create"
    ttl_seconds: float
    description: str = ""


class TokenCreated(WireMessage):
    KIND: ClassVar[str] = "token_created"
    token: str
    expires_at: float


class BundleApply(WireMessage):
    """Apply a bundle whose resources are already in the blob store under ``manifest_id``."""

    KIND: ClassVar[str] = "bundle_apply"
    OP: ClassVar[str] = "bundle.apply"
    spec: BundleSpec
    manifest_id: str


class BundleApplied(WireMessage):
    KIND: ClassVar[str] = "bundle_applied"
    name: str
    manifest_id: str
    changed: bool
    deployment_ids: tuple[str, ...] = ()
    published: int = 0


class BundleDelete(WireMessage):
    KIND: ClassVar[str] = "bundle_delete"
    OP: ClassVar[str] = "bundle.delete"
    name: str


class BundleDeleted(WireMessage):
    KIND: ClassVar[str] = "bundle_deleted"
    name: str
    published: int = 0


class BundleList(WireMessage):
    KIND: ClassVar[str] = "bundle_list"
    OP: ClassVar[str] = "bundle.list"


class BundleSummary(WireMessage):
    KIND: ClassVar[str] = "bundle_summary"
    name: str
    deployment_id: str
    deployment_ids: tuple[str, ...] = ()
    targeted: int = 0
    states: dict[State, int] = Field(default_factory=dict)
    updated_at: float = 0.0
    labels: dict[str, str] = Field(default_factory=dict)  # incl. the gitrepo and commit


class BundleListReply(WireMessage):
    KIND: ClassVar[str] = "bundle_list_reply"
    bundles: tuple[BundleSummary, ...] = ()
    # Shards no replica answered for in time: their clusters are not counted.
    missing_shards: int = 0


class ClusterList(WireMessage):
    KIND: ClassVar[str] = "cluster_list"
    OP: ClassVar[str] = "cluster.list"


class ClusterSummary(WireMessage):
    KIND: ClassVar[str] = "cluster_summary"
    id: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    class_id: str = ""
    bundles: dict[str, State] = Field(default_factory=dict)
    offline: bool = False
    last_seen: float | None = None


class ClusterListReply(WireMessage):
    KIND: ClassVar[str] = "cluster_list_reply"
    clusters: tuple[ClusterSummary, ...] = ()
    missing_shards: int = 0  # as in BundleListReply: their clusters are not listed


class GroupSet(WireMessage):
    KIND: ClassVar[str] = "group_set"
    OP: ClassVar[str] = "group.set"
    group: ClusterGroup


class GroupDelete(WireMessage):
    KIND: ClassVar[str] = "group_delete"
    OP: ClassVar[str] = "group.delete"
    name: str


class GroupList(WireMessage):
    KIND: ClassVar[str] = "group_list"
    OP: ClassVar[str] = "group.list"


class GroupListReply(WireMessage):
    KIND: ClassVar[str] = "group_list_reply"
    groups: tuple[ClusterGroup, ...] = ()


class Stats(WireMessage):
    """Counters of the control plane, for tests, benchmarks and ``shoal stats``."""

    KIND: ClassVar[str] = "stats"
    OP: ClassVar[str] = "stats"


class StatsReply(WireMessage):
    KIND: ClassVar[str] = "stats_reply"
    counters: dict[str, int] = Field(default_factory=dict)


class Ok(WireMessage):
    KIND: ClassVar[str] = "ok"


class ShardSummaryRequest(WireMessage):
    """Asked of every control-plane replica on ``shoal.v1.internal.summary``."""

    KIND: ClassVar[str] = "shard_summary_request"
    with_clusters: bool = False
    replica: str = ""  # who asks: it has its own part already and does not answer itself


class ClusterLive(WireMessage):
    """What only the replica owning a cluster's shard knows about it."""

    KIND: ClassVar[str] = "cluster_live"
    reported: dict[str, tuple[str, State]] = Field(default_factory=dict)
    offline: bool = False
    last_seen: float | None = None


class ShardSummary(WireMessage):
    """One replica's part of the fleet's status: the shards it owns."""

    KIND: ClassVar[str] = "shard_summary"
    replica: str
    shards: tuple[int, ...] = ()
    # bundle -> [(class ID, deployment ID, state, count)] over online clusters
    counts: dict[str, tuple[tuple[str, str, State, int], ...]] = Field(default_factory=dict)
    class_offline: dict[str, int] = Field(default_factory=dict)
    clusters: dict[str, ClusterLive] = Field(default_factory=dict)


# -- git sources (see protocol.gitrepos) ------------------------------------


class GitRepoSet(WireMessage):
    """Create or update a gitrepo; its first poll follows at once on the leader."""

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)
    KIND: ClassVar[str] = "gitrepo_set"
    OP: ClassVar[str] = "gitrepo.set"
    spec: GitRepoSpec


class GitRepoSetReply(WireMessage):
    KIND: ClassVar[str] = "gitrepo_set_reply"
    name: str
    generation: int
    created: bool = False
    changed: bool = False


class GitRepoDelete(WireMessage):
    """Delete a gitrepo and, as Fleet does, every bundle it created."""

    KIND: ClassVar[str] = "gitrepo_delete"
    OP: ClassVar[str] = "gitrepo.delete"
    name: str


class GitRepoDeleted(WireMessage):
    KIND: ClassVar[str] = "gitrepo_deleted"
    name: str
    bundles: tuple[str, ...] = ()


class GitRepoList(WireMessage):
    """Every gitrepo, or only ``name`` (refused as not found when there is none)."""

    KIND: ClassVar[str] = "gitrepo_list"
    OP: ClassVar[str] = "gitrepo.list"
    name: str = ""


class GitRepoBundle(WireMessage):
    """A bundle a gitrepo created, with its readiness over the clusters it targets."""

    KIND: ClassVar[str] = "gitrepo_bundle"
    name: str
    deployment_id: str = ""
    targeted: int = 0
    ready: int = 0
    states: dict[State, int] = Field(default_factory=dict)


class GitRepoInfo(WireMessage):
    KIND: ClassVar[str] = "gitrepo_info"
    spec: GitRepoSpec
    generation: int
    status: GitRepoStatus = Field(default_factory=GitRepoStatus)
    bundles: tuple[GitRepoBundle, ...] = ()
    created_at: float = 0.0


class GitRepoListReply(WireMessage):
    KIND: ClassVar[str] = "gitrepo_list_reply"
    repos: tuple[GitRepoInfo, ...] = ()


class GitSecretSet(WireMessage):
    """Store credentials for gitrepos under ``name``; never echoed back."""

    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)
    KIND: ClassVar[str] = "git_secret_set"
    OP: ClassVar[str] = "gitsecret.set"
    name: str
    credentials: GitCredentials


class GitSecretDelete(WireMessage):
    KIND: ClassVar[str] = "git_secret_delete"
    OP: ClassVar[str] = "gitsecret.delete"
    name: str


class GitSecretList(WireMessage):
    KIND: ClassVar[str] = "git_secret_list"
    OP: ClassVar[str] = "gitsecret.list"


class GitSecretInfo(WireMessage):
    """What may be shown of a secret: its name, kind and user, never the secret itself."""

    KIND: ClassVar[str] = "git_secret_info"
    name: str
    kind: str
    username: str = ""
    used_by: tuple[str, ...] = ()


class GitSecretListReply(WireMessage):
    KIND: ClassVar[str] = "git_secret_list_reply"
    secrets: tuple[GitSecretInfo, ...] = ()


class GitPoll(WireMessage):
    """Poll these gitrepos now; sent to the leader on ``shoal.v1.internal.gitpoll``."""

    KIND: ClassVar[str] = "git_poll"
    names: tuple[str, ...] = ()
