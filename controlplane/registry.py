"""The cluster registry: who is registered, with which labels, in which class.

Registrations persist in the ``shoal-clusters`` KV bucket (JSON, so operators
can read them with the ``nats`` CLI); the in-memory side adds what only the
running control plane needs: each cluster's current label class, liveness and
last reported bundle states. Per-cluster memory is a slotted record; label
classes are shared objects, so a million clusters in a few classes cost a
million small records and a few class entries.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgpack
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from protocol.classes import ClassSchema, Projection, class_id, class_labels, project
from protocol.states import State


class StoredCluster(BaseModel):
    """A registration as kept in KV."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    shard: int
    secret_sha256: str
    registered_at: float


# One reported bundle: (bundle, deployment ID, state). Equal triples are one
# shared object (see StatusBook), so a million clusters on one deployment
# hold a million pointers, not a million copies.
Reported = tuple[str, str, State]
_NO_ANNOTATIONS = b""


def _pack(mapping: dict[str, str]) -> bytes:
    return msgpack.packb(sorted(mapping.items()), use_bin_type=True) if mapping else b""


def _unpack(packed: bytes) -> dict[str, str]:
    return {k: v for k, v in msgpack.unpackb(packed, raw=False)} if packed else {}


@dataclass(slots=True, eq=False)
class ClusterRecord:
    """What the control plane keeps per cluster, kept small: a million of these fit.

    Labels and annotations are packed (a few dozen bytes instead of two dicts),
    the secret is its raw digest, the class ID is the class's own string object.
    """

    id: str
    name: str
    shard: int
    labels_packed: bytes
    annotations_packed: bytes
    secret_digest: bytes
    registered_at: float
    class_id: str = ""
    last_seen: float | None = None
    offline: bool = False
    status_key: int = 0  # stream sequence of the last report taken
    report_seq: int = 0  # the agent's own sequence of that report (heartbeats repeat it)
    deadline: int = 0  # liveness bucket (see status.Liveness)
    reported: tuple[Reported, ...] = ()

    @classmethod
    def from_stored(cls, stored: StoredCluster) -> ClusterRecord:
        return cls(
            id=stored.id,
            name=stored.name,
            shard=stored.shard,
            labels_packed=_pack(stored.labels),
            annotations_packed=_pack(stored.annotations) or _NO_ANNOTATIONS,
            secret_digest=bytes.fromhex(stored.secret_sha256),
            registered_at=stored.registered_at,
        )

    def adopt(self, stored: StoredCluster) -> None:
        self.name = stored.name
        self.shard = stored.shard
        self.labels_packed = _pack(stored.labels)
        self.annotations_packed = _pack(stored.annotations) or _NO_ANNOTATIONS
        self.secret_digest = bytes.fromhex(stored.secret_sha256)
        self.registered_at = stored.registered_at

    @property
    def labels(self) -> dict[str, str]:
        return _unpack(self.labels_packed)

    @property
    def annotations(self) -> dict[str, str]:
        return _unpack(self.annotations_packed)

    @property
    def stored(self) -> StoredCluster:
        return StoredCluster(
            id=self.id,
            name=self.name,
            labels=self.labels,
            annotations=self.annotations,
            shard=self.shard,
            secret_sha256=self.secret_digest.hex(),
            registered_at=self.registered_at,
        )

    def reported_map(self) -> dict[str, tuple[str, State]]:
        return {bundle: (deployment, state) for bundle, deployment, state in self.reported}


@dataclass(slots=True)
class LabelClass:
    id: str
    projection: Projection
    members: set[str] = field(default_factory=set)
    offline: int = 0


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(record: ClusterRecord, secret: str) -> bool:
    return hmac.compare_digest(record.secret_digest, hashlib.sha256(secret.encode()).digest())


def shard_of(cluster_id: str, shards: int) -> int:
    return zlib.crc32(cluster_id.encode()) % shards


class Registry:
    """Clusters by ID and name, and the label classes they fall into."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.clusters: dict[str, ClusterRecord] = {}
        self.by_name: dict[str, str] = {}
        # A cluster's shard follows from its ID and never changes.
        self.by_shard: dict[int, list[ClusterRecord]] = {}
        self.classes: dict[str, LabelClass] = {}
        self.schema = ClassSchema()
        # Told when a cluster moves from one class to another (old class ID given).
        self.on_move: Callable[[ClusterRecord, str], None] | None = None

    async def save(self, stored: StoredCluster) -> tuple[ClusterRecord, bool]:
        """Persist a registration; returns the record and whether its class is new."""
        await self._kv.put(stored.id, stored.model_dump_json().encode())
        return self.index(stored)

    def index(self, stored: StoredCluster) -> tuple[ClusterRecord, bool]:
        """Take a registration into memory; returns the record and whether its class is new."""
        record = self.clusters.get(stored.id)
        if record is None:
            record = ClusterRecord.from_stored(stored)
            self.clusters[record.id] = record
            self.by_shard.setdefault(record.shard, []).append(record)
        else:
            old_name = record.name
            if old_name != stored.name and self.by_name.get(old_name) == stored.id:
                del self.by_name[old_name]
            record.adopt(stored)
        self.by_name[record.name] = record.id
        return record, self._classify(record)

    def _classify(self, record: ClusterRecord) -> bool:
        projection = project(class_labels(record.name, record.labels), self.schema)
        new_id = class_id(projection)
        if new_id == record.class_id:
            return False
        old = self.classes.get(record.class_id)
        if old is not None:
            old.members.discard(record.id)
            if record.offline:
                old.offline -= 1
            if not old.members:
                del self.classes[old.id]
        label_class = self.classes.get(new_id)
        created = label_class is None
        if label_class is None:
            label_class = self.classes[new_id] = LabelClass(id=new_id, projection=projection)
        label_class.members.add(record.id)
        if record.offline:
            label_class.offline += 1
        old_id, record.class_id = record.class_id, label_class.id  # one string per class
        if old_id and self.on_move is not None:
            self.on_move(record, old_id)
        return created

    def set_schema(self, schema: ClassSchema) -> None:
        """Adopt a new schema and move every cluster to its class under it."""
        self.schema = schema
        self.classes.clear()
        for record in self.clusters.values():
            old_id, record.class_id = record.class_id, ""
            self._classify(record)
            if old_id and old_id != record.class_id and self.on_move is not None:
                self.on_move(record, old_id)

    def set_offline(self, record: ClusterRecord, offline: bool) -> None:
        if record.offline == offline:
            return
        record.offline = offline
        label_class = self.classes.get(record.class_id)
        if label_class is not None:
            label_class.offline += 1 if offline else -1

    def in_shard(self, shard: int) -> list[ClusterRecord]:
        return self.by_shard.get(shard, [])

    def get_by_name(self, name: str) -> ClusterRecord | None:
        cluster_id = self.by_name.get(name)
        return self.clusters.get(cluster_id) if cluster_id else None

    def __iter__(self) -> Iterator[ClusterRecord]:
        return iter(self.clusters.values())

    def __len__(self) -> int:
        return len(self.clusters)
