"""The control plane's model of the fleet, and every change to it.

:class:`Fleet` holds the registry, bundles, groups, the desired map per
(class, bundle) and the status book, and is the one place that changes them.
Changes that can alter targeting (a bundle, a group, a cluster joining a new
class, a label change) end in :meth:`Fleet.retarget`, which recomputes the
schema and the desired map per class and lets the publisher send only the
differences. Request handlers and ingest call into this; nothing else mutates
it. All methods run on one event loop; ``retarget`` is serialised by a lock.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Iterable

import structlog
from nats.js.errors import ObjectNotFoundError

from controlplane import sources
from controlplane.errors import AuthError, BundleInvalid, NotFound, RequestRejected
from controlplane.publisher import DesiredPublisher, Key
from controlplane.registry import (
    ClusterRecord,
    Registry,
    StoredCluster,
    secret_digest,
    secret_matches,
    shard_of,
)
from controlplane.settings import ServerSettings
from controlplane.status import Liveness, StatusBook, summarise
from controlplane.streams import Stores
from controlplane.targeting import BundleRecord, Resolved, compute_schema, resolve_class
from controlplane.tokens import Tokens
from controlplane.watch import BucketFollower
from protocol import admin, codec, ids
from protocol.errors import DecodeError, InvalidNameError
from protocol.messages import Heartbeat, StatusReport
from protocol.models import ClusterGroup, validate_cluster_name
from protocol.selectors import validate_labels
from protocol.states import State

log = structlog.get_logger(__name__)

CLUSTER_ID_BYTES = 8
SECRET_BYTES = 24


class Fleet:
    def __init__(
        self, stores: Stores, publisher: DesiredPublisher, settings: ServerSettings
    ) -> None:
        self._stores = stores
        self._settings = settings
        self.publisher = publisher
        self.tokens = Tokens(stores.tokens)
        self.status = StatusBook()
        self.registry = Registry(stores.clusters)
        self.registry.on_move = self.status.move
        self.bundles: dict[str, BundleRecord] = {}
        self.groups: dict[str, ClusterGroup] = {}
        self.desired: dict[Key, Resolved] = {}
        self.liveness = Liveness(settings.heartbeat_timeout)
        self.started_at = time.time()
        self.leader = False
        self.owned: set[int] = set()
        # cluster ID -> (report seq its heartbeat announced, when first noticed)
        self.unreported: dict[str, tuple[int, float]] = {}
        self._loaded = False
        self._lock = asyncio.Lock()
        self._bundle_locks: dict[str, asyncio.Lock] = {}
        # Requests are served concurrently; one name registers one cluster at a time.
        self._registering: set[str] = set()
        # Classes a registration made whose desired state is still being published.
        self._unpublished: dict[str, asyncio.Event] = {}

    # -- loading -------------------------------------------------------------

    async def load(self) -> list[BucketFollower]:
        """Read bundles, groups and clusters; returns followers to run for later changes."""
        followers = [
            BucketFollower(self._stores.bundles, self._bundle_changed, name="bundles"),
            BucketFollower(self._stores.groups, self._group_changed, name="groups"),
            BucketFollower(self._stores.clusters, self._cluster_changed, name="clusters"),
        ]
        for follower in followers:
            await follower.load()
        await self.publisher.load()
        if self.publisher.schema is not None:
            self.registry.set_schema(self.publisher.schema)
        self._loaded = True
        await self.retarget()  # every replica needs the desired map to summarise status
        log.info(
            "fleet.loaded",
            bundles=len(self.bundles),
            groups=len(self.groups),
            clusters=len(self.registry),
        )
        return followers

    async def _bundle_changed(self, key: str, value: bytes | None) -> None:
        if value is None:
            changed = self.bundles.pop(key, None) is not None
        else:
            record = BundleRecord.model_validate_json(value)
            changed = self.bundles.get(key) != record
            self.bundles[key] = record
        if changed and self._loaded:
            await self.retarget()

    async def _group_changed(self, key: str, value: bytes | None) -> None:
        if value is None:
            changed = self.groups.pop(key, None) is not None
        else:
            group = ClusterGroup.model_validate_json(value)
            changed = self.groups.get(key) != group
            self.groups[key] = group
        if changed and self._loaded:
            await self.retarget()

    async def _cluster_changed(self, key: str, value: bytes | None) -> None:
        if value is None:
            return  # clusters are not deleted yet
        stored = StoredCluster.model_validate_json(value)
        known = self.registry.clusters.get(key)
        if known is not None and known.stored == stored:
            return
        record, new_class = self.registry.index(stored)
        if known is None and record.shard in self.owned:
            # Registered through another replica: its liveness is ours to track.
            self.liveness.seen(record, time.time())
        if new_class and self._loaded:
            # Maybe made here before the registration that saved it saw it.
            await self._class_published(record.class_id, new=True)

    async def set_leader(self, leader: bool) -> None:
        """Become or stop being the replica that publishes desired state."""
        if leader == self.leader:
            return
        self.leader = leader
        log.info("fleet.leadership", leader=leader)
        if leader:
            await self.publisher.load()  # another leader may have published meanwhile
            await self.retarget()

    # -- targeting -----------------------------------------------------------

    async def retarget(self) -> int:
        """Recompute classes and desired state; publish what changed."""
        async with self._lock:
            old = self.registry.schema
            schema = compute_schema(self.bundles.values(), self.groups, epoch=old.epoch)
            if schema.keys != old.keys:
                schema = schema.model_copy(update={"epoch": old.epoch + 1})
                self.registry.set_schema(schema)
            else:
                schema = old
            bundles = list(self.bundles.values())
            desired: dict[Key, Resolved] = {}
            for label_class in self.registry.classes.values():
                for bundle, resolved in resolve_class(
                    label_class.projection, bundles, self.groups
                ).items():
                    desired[(label_class.id, bundle)] = resolved
            self.desired = desired
            if not self.leader:
                return 0
            live = set(self.registry.classes)
            published = await self.publisher.sync(desired, live_classes=live, schema=schema)
            await self.publisher.purge_orphans(live_classes=live)
            if published:
                log.info("fleet.retargeted", published=published, classes=len(live))
            return published

    # -- bundles -------------------------------------------------------------

    def _bundle_lock(self, name: str) -> asyncio.Lock:
        """One apply or delete of a bundle at a time on this replica: a slow render
        (validation runs in a thread) must not finish after, and so undo, a newer one."""
        return self._bundle_locks.setdefault(name, asyncio.Lock())

    async def apply_bundle(self, request: admin.BundleApply) -> admin.BundleApplied:
        async with self._bundle_lock(request.spec.name):
            return await self._apply_bundle(request)

    async def _apply_bundle(self, request: admin.BundleApply) -> admin.BundleApplied:
        spec = request.spec
        try:
            blob = await self._stores.blobs.get(request.manifest_id)
        except ObjectNotFoundError:
            raise BundleInvalid(
                f"bundle {spec.name!r}: resources {request.manifest_id} were not uploaded"
            ) from None
        data = blob.data or b""
        if ids.manifest_id_of_blob(data) != request.manifest_id:
            raise BundleInvalid(f"bundle {spec.name!r}: resources do not match their digest")
        try:
            resources = codec.decode_resources(data)
        except DecodeError as exc:
            raise BundleInvalid(f"bundle {spec.name!r}: unreadable resources: {exc}") from exc
        old = self.bundles.get(spec.name)
        if old is None or old.spec != spec or old.manifest_id != request.manifest_id:
            await asyncio.to_thread(sources.validate_bundle, spec, resources)
        for group in {t.cluster_group for t in spec.targets if t.cluster_group}:
            if group not in self.groups:
                log.warning("bundle.target.unknown_group", bundle=spec.name, group=group)
        changed = old is None or old.spec != spec or old.manifest_id != request.manifest_id
        if changed:
            now = time.time()
            record = BundleRecord(
                spec=spec,
                manifest_id=request.manifest_id,
                created_at=old.created_at if old else now,
                updated_at=now,
            )
            await self._stores.bundles.put(spec.name, record.model_dump_json().encode())
            self.bundles[spec.name] = record
        # Always: it publishes only differences, and so repairs a publish that failed.
        published = await self.retarget()
        deployments = sorted(
            {r.deployment_id for (_, b), r in self.desired.items() if b == spec.name}
        )
        log.info("bundle.applied", bundle=spec.name, changed=changed, published=published)
        return admin.BundleApplied(
            name=spec.name,
            manifest_id=request.manifest_id,
            changed=changed,
            deployment_ids=tuple(deployments),
            published=published,
        )

    async def delete_bundle(self, name: str) -> admin.BundleDeleted:
        async with self._bundle_lock(name):
            return await self._delete_bundle(name)

    async def _delete_bundle(self, name: str) -> admin.BundleDeleted:
        if name not in self.bundles:
            raise NotFound(f"no bundle named {name!r}")
        await self._stores.bundles.delete(name)
        self.bundles.pop(name, None)  # the KV watch may have been first
        published = await self.retarget()
        log.info("bundle.deleted", bundle=name, published=published)
        return admin.BundleDeleted(name=name, published=published)

    async def set_group(self, group: ClusterGroup) -> None:
        await self._stores.groups.put(group.name, group.model_dump_json().encode())
        self.groups[group.name] = group
        await self.retarget()

    async def delete_group(self, name: str) -> None:
        if name not in self.groups:
            raise NotFound(f"no cluster group named {name!r}")
        await self._stores.groups.delete(name)
        self.groups.pop(name, None)  # the KV watch may have been first
        await self.retarget()

    # -- clusters ------------------------------------------------------------

    async def register(
        self, *, token: str, name: str, labels: dict[str, str], annotations: dict[str, str]
    ) -> tuple[ClusterRecord, str]:
        await self.tokens.verify(token)
        try:
            validate_cluster_name(name)
            validate_labels(labels)
        except InvalidNameError as exc:
            raise BundleInvalid(str(exc)) from exc
        if name in self._registering:
            raise RequestRejected(f"cluster {name!r} is being registered already; retry")
        self._registering.add(name)
        try:
            return await self._register(name, labels, annotations)
        finally:
            self._registering.discard(name)

    async def _register(
        self, name: str, labels: dict[str, str], annotations: dict[str, str]
    ) -> tuple[ClusterRecord, str]:
        existing = self.registry.get_by_name(name)
        cluster_id = existing.id if existing else secrets.token_hex(CLUSTER_ID_BYTES)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        stored = StoredCluster(
            id=cluster_id,
            name=name,
            labels=labels,
            annotations=annotations,
            shard=shard_of(cluster_id, self._settings.shards),
            secret_sha256=secret_digest(secret),
            registered_at=time.time(),
        )
        record, new_class = await self.registry.save(stored)
        now = time.time()
        self.heartbeat(record, seen=now, now=now)
        await self._class_published(record.class_id, new=new_class)
        log.info("cluster.registered", cluster=name, cluster_id=cluster_id, again=bool(existing))
        return record, secret

    async def _class_published(self, class_id: str, *, new: bool) -> None:
        """Return once the desired state of class ``class_id`` is stored on the bus.

        The agent subscribes to its class and reads the class's messages once the
        reply comes. A message still on its way into the stream then can reach
        neither: routed before the subscription, stored after the read. So a
        registration that makes a class publishes it first, and the class's other
        registrations meanwhile wait for that.
        """
        if not new:
            pending = self._unpublished.get(class_id)
            if pending is not None:
                await pending.wait()
            return
        published = self._unpublished[class_id] = asyncio.Event()
        try:
            await self.retarget()
        finally:
            published.set()
            if self._unpublished.get(class_id) is published:
                del self._unpublished[class_id]

    async def hello(
        self,
        cluster_id: str,
        *,
        secret: str,
        labels: dict[str, str],
        annotations: dict[str, str],
    ) -> ClusterRecord:
        record = self.authenticate(cluster_id, secret)
        try:
            validate_labels(labels)
        except InvalidNameError as exc:
            raise BundleInvalid(str(exc)) from exc
        if record.labels != labels or record.annotations != annotations:
            updated = record.stored.model_copy(
                update={"labels": labels, "annotations": annotations}
            )
            _, new_class = await self.registry.save(updated)
            await self._class_published(record.class_id, new=new_class)
            log.info("cluster.labels.changed", cluster=record.name, labels=labels)
        now = time.time()
        self.heartbeat(record, seen=now, now=now)
        return record

    def authenticate(self, cluster_id: str, secret: str) -> ClusterRecord:
        record = self.registry.clusters.get(cluster_id)
        if record is None:
            raise NotFound(f"no cluster with ID {cluster_id!r}; register again with a token")
        if not secret_matches(record, secret):
            raise AuthError(f"wrong credentials for cluster {record.name!r}")
        return record

    # -- status --------------------------------------------------------------

    def heartbeat(self, record: ClusterRecord, *, seen: float, now: float) -> None:
        """The cluster was alive at ``seen``; only the shard's owner tracks liveness."""
        record.last_seen = max(record.last_seen or 0.0, seen)
        if record.shard not in self.owned:
            return
        if now - seen > self._settings.heartbeat_timeout:
            return  # old news: proves nothing about now
        self.liveness.seen(record, seen)
        if record.offline:
            self.status.set_offline(self.registry, record, False)
            log.info("cluster.online", cluster=record.name)

    def ingest(
        self,
        subject_cluster: str,
        data: bytes,
        *,
        now: float,
        stream_seq: int = 0,
        stored_at: float | None = None,
    ) -> None:
        """One message from a status or heartbeat subject; raises DecodeError on garbage.

        Status reports come from the stream with their sequence (which orders one
        cluster's reports, whatever its clock says) and the time JetStream stored
        them; a replayed report changes nothing and proves nothing about liveness.
        """
        record = self.registry.clusters.get(subject_cluster)
        message = codec.decode_any(data)
        if isinstance(message, StatusReport):
            if record is None:
                raise DecodeError(f"status for unknown cluster {subject_cluster!r}")
            if not self.status.apply_report(record, message, seq=stream_seq):
                return
            seen = stored_at if stored_at is not None else now
        elif isinstance(message, Heartbeat):
            if record is None:
                raise DecodeError(f"heartbeat for unknown cluster {subject_cluster!r}")
            seen = now
            if message.status_seq > record.report_seq and record.shard in self.owned:
                # The agent sent a report this replica has not taken (yet: the
                # heartbeat may simply have overtaken it on the other path).
                self.unreported.setdefault(record.id, (message.status_seq, now))
        else:
            raise DecodeError(f"unexpected {message.KIND!r} message on a status subject")
        self.heartbeat(record, seen=seen, now=now)

    def overdue_reports(self, now: float, *, grace: float, limit: int) -> list[ClusterRecord]:
        """Clusters whose heartbeats announced a report not taken within ``grace`` s.

        Each is handed out once per announced report: it is taken off the list
        and its ``report_seq`` set to what was announced, whether or not the
        caller then finds the report.
        """
        due: list[ClusterRecord] = []
        for cluster_id, (announced, noticed) in list(self.unreported.items()):
            record = self.registry.clusters.get(cluster_id)
            if record is None or record.shard not in self.owned or record.report_seq >= announced:
                del self.unreported[cluster_id]
            elif now - noticed >= grace and len(due) < limit:
                del self.unreported[cluster_id]
                record.report_seq = announced
                due.append(record)
        return due

    def sweep_offline(self, now: float) -> int:
        marked = 0
        for record in self.liveness.overdue(now):
            if not record.offline:
                self.status.set_offline(self.registry, record, True)
                marked += 1
                log.info("cluster.offline", cluster=record.name, last_seen=record.last_seen)
        return marked

    # -- shards --------------------------------------------------------------

    def acquire_shard(self, shard: int) -> None:
        """Start tracking liveness of the shard's clusters, with the start-up grace."""
        self.owned.add(shard)
        deadline = time.time() + self._settings.startup_grace
        for record in self.registry.in_shard(shard):
            self.liveness.seen(record, deadline)

    def release_shard(self, shard: int) -> None:
        """Forget what we knew of the shard's clusters: its new owner counts them now."""
        self.owned.discard(shard)
        for record in self.registry.in_shard(shard):
            self.status.forget(record)
            self.registry.set_offline(record, False)
            self.liveness.forget(record)
            record.status_key = 0
            record.last_seen = None

    def shard_summary(
        self, replica: str, shards: Iterable[int], *, with_clusters: bool
    ) -> admin.ShardSummary:
        owned = tuple(sorted(shards))
        class_offline = {c.id: c.offline for c in self.registry.classes.values() if c.offline}
        clusters: dict[str, admin.ClusterLive] = {}
        if with_clusters:
            clusters = {
                r.id: admin.ClusterLive(
                    reported=r.reported_map(), offline=r.offline, last_seen=r.last_seen
                )
                for shard in owned
                for r in self.registry.in_shard(shard)
            }
        return admin.ShardSummary(
            replica=replica,
            shards=owned,
            counts=self.status.partial_counts(),
            class_offline=class_offline,
            clusters=clusters,
        )

    # -- read side -----------------------------------------------------------

    def bundle_summaries(self, parts: Iterable[admin.ShardSummary]) -> list[admin.BundleSummary]:
        counts: dict[str, Counter[tuple[str, str, State]]] = {}
        class_offline: Counter[str] = Counter()
        for part in parts:
            for bundle, rows in part.counts.items():
                counter = counts.setdefault(bundle, Counter())
                for label_class, dep, state, n in rows:
                    counter[(label_class, dep, state)] += n
            class_offline.update(part.class_offline)
        out = []
        for name in sorted(self.bundles):
            record = self.bundles[name]
            states, targeted, deployments = summarise(
                name, counts.get(name, Counter()), self.registry, class_offline, self.desired
            )
            out.append(
                admin.BundleSummary(
                    name=name,
                    deployment_id=deployments[0]
                    if deployments
                    else ids.deployment_id(record.manifest_id, record.spec.options),
                    deployment_ids=tuple(deployments),
                    targeted=targeted,
                    states=states,
                    updated_at=record.updated_at,
                    labels=record.spec.labels,
                )
            )
        return out

    def cluster_summaries(self, parts: Iterable[admin.ShardSummary]) -> list[admin.ClusterSummary]:
        live: dict[str, admin.ClusterLive] = {}
        for part in parts:
            live.update(part.clusters)
        bundles = sorted(self.bundles)
        unknown = admin.ClusterLive()
        out = []
        for record in sorted(self.registry, key=lambda r: r.name):
            known = live.get(record.id, unknown)
            out.append(
                admin.ClusterSummary(
                    id=record.id,
                    name=record.name,
                    labels=record.labels,
                    class_id=record.class_id,
                    bundles=StatusBook.cluster_states(
                        record.class_id, known.reported, self.desired, bundles
                    ),
                    offline=known.offline,
                    last_seen=known.last_seen,
                )
            )
        return out
