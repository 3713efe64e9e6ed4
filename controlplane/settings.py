"""Settings of the control plane: every interval, timeout and limit in one place.

Each field maps to a ``shoal server`` flag and to an environment variable with
the ``SHOAL_`` prefix (``--heartbeat-timeout`` is ``SHOAL_HEARTBEAT_TIMEOUT``).
Settings are passed explicitly to the objects that need them, never read from
a global.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from pydantic import Field, SecretStr

from protocol.settings import EnvSettings


class ServerSettings(EnvSettings):
    data_dir: Path = Field(
        default=Path(".shoal"),
        description="Where the embedded NATS keeps JetStream files (streams, KV, blobs).",
    )
    host: str = Field(default="127.0.0.1", description="Address the embedded NATS listens on.")
    port: int = Field(default=4222, description="Port of the embedded NATS; 0 picks a free one.")
    nats_url: str | None = Field(
        default=None,
        description="Use this NATS (or comma-separated cluster URLs) instead of embedding one.",
    )
    replicas: int = Field(
        default=1, description="JetStream replicas for shoal's streams; 3 on a 3-node cluster."
    )
    shards: int = Field(
        default=16,
        description="Shards clusters hash into; fixed when the first cluster registers.",
    )
    lease_ttl: float = Field(
        default=10.0,
        description="Seconds a shard lease lives unrenewed: a dead replica's shards move to "
        "the others within this time. Leases renew three times per TTL.",
    )
    replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}",
        description="This replica's name in the shard leases; unique per process.",
    )
    heartbeat_timeout: float = Field(
        default=20.0,
        description="Seconds without a heartbeat after which a cluster is Offline "
        "(agents beat every 5 s by default, so four are missed).",
    )
    offline_check_interval: float = Field(
        default=1.0, description="Seconds between sweeps for overdue heartbeats."
    )
    startup_grace: float = Field(
        default=30.0,
        description="Seconds after start before any cluster may be marked Offline, so a "
        "restarted control plane does not mark the whole fleet offline.",
    )
    status_batch: int = Field(
        default=1000, description="Status reports fetched from JetStream per batch."
    )
    request_timeout: float = Field(
        default=10.0, description="Seconds to wait for JetStream API replies."
    )
    class_purge_grace: float = Field(
        default=120.0,
        description="Seconds a class that no cluster uses keeps its desired state before it "
        "is purged, so agents that have not yet seen a new schema are not left empty.",
    )
    git_cache_dir: Path | None = Field(
        default=None,
        description="Where gitrepos' repositories are cached (shallow bare clones) and commits "
        "checked out for building bundles; default <data-dir>/git.",
    )
    git_timeout: float = Field(
        default=120.0,
        description="Seconds one git command (ls-remote, fetch) may run before it is killed "
        "and the poll is recorded as failed.",
    )
    git_max_concurrent_polls: int = Field(
        default=4,
        description="Gitrepos polled at once by the leader; more wait for their turn.",
    )
    webhook_listen: str | None = Field(
        default=None,
        description="host:port of the git webhook endpoint (GitHub and GitLab push events); "
        "off when unset.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret of the git webhook (GitHub's HMAC key, GitLab's token); "
        "required with webhook_listen. Set it through the environment only.",
    )
    webhook_max_body: int = Field(
        default=4 * 1024 * 1024,
        description="Bytes a webhook request body may have; larger ones get 413. Push "
        "payloads are small, but a big push lists many commits.",
    )

    @property
    def git_cache_path(self) -> Path:
        return self.git_cache_dir or self.data_dir / "git"
