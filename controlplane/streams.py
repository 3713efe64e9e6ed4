"""JetStream streams, KV buckets and the object store shoal uses; created idempotently.

=================  ==========================================================
name               holds
=================  ==========================================================
SHOAL_DESIRED      schema and desired state, last message per subject; agents
                   read it with direct gets, so no consumer exists per agent
SHOAL_STATUS       the last status report of every cluster
shoal-tokens       registration tokens by sha256 of the token
shoal-clusters     the cluster registry
shoal-bundles      bundle specs and their manifest IDs
shoal-groups       cluster groups
shoal-meta         facts fixed for the fleet's lifetime (the shard count)
shoal-blobs        bundle resources by manifest ID (object store)
shoal-gitrepos     gitrepo specs (written by any replica's admin API)
shoal-gitrepo-     gitrepo status (written only by the leader, which polls)
status
shoal-git-secrets  credentials gitrepos fetch with; read only when fetching
=================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BucketNotFoundError, KeyValueError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from controlplane.errors import ControlPlaneError
from protocol import subjects

TOKENS_BUCKET = "shoal-tokens"
META_BUCKET = "shoal-meta"
SHARDS_KEY = "shards"
CLUSTERS_BUCKET = "shoal-clusters"
BUNDLES_BUCKET = "shoal-bundles"
GROUPS_BUCKET = "shoal-groups"
GITREPOS_BUCKET = "shoal-gitrepos"
GITREPO_STATUS_BUCKET = "shoal-gitrepo-status"
GIT_SECRETS_BUCKET = "shoal-git-secrets"


def desired_stream(replicas: int) -> StreamConfig:
    return StreamConfig(
        name=subjects.DESIRED_STREAM,
        subjects=[subjects.SCHEMA, subjects.DESIRED_ALL, subjects.CLUSTER_DESIRED_ALL],
        retention=RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,
        storage=StorageType.FILE,
        num_replicas=replicas,
        allow_direct=True,
        discard=DiscardPolicy.OLD,
    )


def status_stream(replicas: int) -> StreamConfig:
    return StreamConfig(
        name=subjects.STATUS_STREAM,
        subjects=[subjects.STATUS_ALL],
        retention=RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,
        storage=StorageType.FILE,
        num_replicas=replicas,
        allow_direct=True,
        discard=DiscardPolicy.OLD,
    )


@dataclass
class Stores:
    meta: KeyValue
    tokens: KeyValue
    clusters: KeyValue
    bundles: KeyValue
    groups: KeyValue
    blobs: ObjectStore


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


async def _kv(js: JetStreamContext, bucket: str, replicas: int) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE, replicas=replicas)
        )


async def ensure(js: JetStreamContext, *, replicas: int = 1) -> Stores:
    """Create or update everything shoal needs; safe to call on every start."""
    await _ensure_stream(js, desired_stream(replicas))
    await _ensure_stream(js, status_stream(replicas))
    try:
        blobs = await js.object_store(subjects.BLOB_BUCKET)
    except (BucketNotFoundError, NotFoundError):
        blobs = await js.create_object_store(
            subjects.BLOB_BUCKET,
            ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas),
        )
    return Stores(
        meta=await _kv(js, META_BUCKET, replicas),
        tokens=await _kv(js, TOKENS_BUCKET, replicas),
        clusters=await _kv(js, CLUSTERS_BUCKET, replicas),
        bundles=await _kv(js, BUNDLES_BUCKET, replicas),
        groups=await _kv(js, GROUPS_BUCKET, replicas),
        blobs=blobs,
    )


@dataclass
class GitStores:
    repos: KeyValue
    status: KeyValue
    secrets: KeyValue


async def ensure_git(js: JetStreamContext, *, replicas: int = 1) -> GitStores:
    """The buckets of git sources; separate from :func:`ensure` so their owner wires them."""
    return GitStores(
        repos=await _kv(js, GITREPOS_BUCKET, replicas),
        status=await _kv(js, GITREPO_STATUS_BUCKET, replicas),
        secrets=await _kv(js, GIT_SECRETS_BUCKET, replicas),
    )


async def fix_shard_count(meta: KeyValue, shards: int) -> None:
    """Record the shard count on first start; refuse a replica that disagrees.

    Agents keep the shard they were given at registration, so the count can
    never change for a fleet; a replica started with another count would
    ingest the wrong clusters.
    """
    try:
        await meta.create(SHARDS_KEY, str(shards).encode())
        return
    except KeyValueError:
        pass
    entry = await meta.get(SHARDS_KEY)
    recorded = int((entry.value or b"0").decode())
    if recorded != shards:
        raise ControlPlaneError(
            f"this NATS holds a shoal fleet with {recorded} shards; start the control plane "
            f"with --shards {recorded} (or SHOAL_SHARDS={recorded})"
        )
