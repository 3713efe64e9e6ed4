"""The agent: identity, desired state from the bus, reconciler and reporter, wired.

Lifetime::

    async with Agent(...) as agent:     # start(): load state, identify, spawn tasks
        await agent.run_forever()       # returns on stop(), raises on a fatal error

``start()`` needs the bus only on a first start (to register). With a saved
identity and desired state it starts enforcing at once and identifies itself
in the background whenever the bus is reachable (invariant 6).

The session task owns the bus side. On every (re)connection it reads the
schema, computes the class, subscribes (schema, class, cluster) *before*
reading the full state with batch direct gets, so nothing falls between
snapshot and live stream (invariant 2); it re-reads after reconnects, when a
schema change moves the cluster to another class, and periodically (jittered)
as a safety net. While a re-read is in progress the reconciler is not told
about partial state, so a class change never removes bundles in passing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from pathlib import Path

import structlog

from bundles.templating import ClusterContext
from edgeagent import identity as identity_mod
from edgeagent.backend import ClusterBackend
from edgeagent.blobs import BlobProvider, Blobs
from edgeagent.bus import AgentBus, NatsBus, Subscription
from edgeagent.desired import DecodedMessages, DesiredState, Scope
from edgeagent.errors import AgentError, BusError, BusUnavailable, IdentityError, StateStoreError
from edgeagent.fanout import Handler
from edgeagent.reconciler import Reconciler
from edgeagent.render import ParseCache
from edgeagent.reporter import Reporter
from edgeagent.settings import AgentSettings
from edgeagent.store import BLOB_DIR, BlobCache, DiskBlobCache, DiskStore, Identity, StateStore
from edgeagent.tasks import TaskSet
from protocol import subjects
from protocol.classes import ClassSchema, class_of
from protocol.codec import decode
from protocol.errors import DecodeError
from protocol.messages import DesiredBundle, SchemaMessage

log = structlog.get_logger(__name__)

_SYNC_RETRY_INITIAL = 0.5
_STOP_FLUSH_TIMEOUT = 2.0


class Agent:
    """One cluster's agent; see the module docstring for its lifetime."""

    def __init__(
        self,
        *,
        bus: AgentBus,
        backend: ClusterBackend,
        store: StateStore,
        blob_cache: BlobCache,
        settings: AgentSettings,
        name: str,
        labels: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
        token: str | None = None,
        blobs: BlobProvider | None = None,
        parsed: ParseCache | None = None,
        decoded: DecodedMessages | None = None,
        own_heartbeats: bool = True,
    ) -> None:
        self.bus = bus
        # False when something else calls reporter.beat() on this agent's behalf
        # (a simulated fleet pacing many agents' heartbeats from one task).
        self._own_heartbeats = own_heartbeats
        self.backend = backend
        self.store = store
        self.settings = settings
        self.name = name
        self.labels = dict(labels)
        self.annotations = dict(annotations or {})
        self._token = token
        self.reconciler = Reconciler(
            backend=backend,
            blobs=blobs or Blobs(blob_cache, bus, timeout=settings.blob_timeout),
            settings=settings,
            cluster=name,
            context=ClusterContext(name=name, labels=self.labels, annotations=self.annotations),
            parsed=parsed or ParseCache(),
        )
        self.reporter = Reporter(bus, self.reconciler, settings)
        self.reconciler.on_change = self.reporter.notify
        self.desired = DesiredState()
        self._decoded = decoded or DecodedMessages()
        self.identity: Identity | None = None
        self.malformed = 0
        self.syncs = 0
        self._identified = False
        self._syncing = False
        self._subscribed_class = ""
        self._subscribed_cluster = ""
        self._subs: dict[str, Subscription] = {}
        self._resync = asyncio.Event()
        self._done: asyncio.Future[None] | None = None
        self._tasks = TaskSet(f"agent:{name}", on_crash=self._crashed)

    @classmethod
    def from_state_dir(
        cls,
        state_dir: Path,
        *,
        backend: ClusterBackend,
        settings: AgentSettings,
        name: str,
        labels: Mapping[str, str],
        url: str | None = None,
        bus: AgentBus | None = None,
        annotations: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> Agent:
        """An agent keeping identity, desired state and blobs under ``state_dir``."""
        if bus is None:
            if url is None:
                raise ValueError("give url= or bus=")
            bus = NatsBus(settings, url=url, name=f"shoal-agent-{name}")
        return cls(
            bus=bus,
            backend=backend,
            store=DiskStore(state_dir),
            blob_cache=DiskBlobCache(state_dir / BLOB_DIR),
            settings=settings,
            name=name,
            labels=labels,
            annotations=annotations,
            token=token,
        )

    # --- lifetime ------------------------------------------------------------------

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._done = asyncio.get_running_loop().create_future()
        saved_identity = self.store.load_identity()
        saved_desired = self.store.load_desired()
        await self.bus.start()
        if saved_identity is None:
            if not await self.bus.wait_connected(self.settings.connect_timeout):
                await self.bus.close()
                raise BusUnavailable(
                    f"cannot reach NATS within {self.settings.connect_timeout:.0f} s to "
                    f"register cluster {self.name!r}: check the NATS URL"
                )
            try:
                self.identity = await self._establish()
            except AgentError:
                await self.bus.close()
                raise
            self._identified = True
        else:
            self.identity = saved_identity
        self.reporter.identity = self.identity
        self.reconciler.cluster = self.identity.cluster_id
        if saved_desired is not None:
            self.desired = DesiredState(saved_desired)
            self.reconciler.set_desired(self.desired.effective())
            log.info(
                "agent.saved_state_loaded",
                cluster=self.identity.cluster_id,
                bundles=len(self.desired.effective()),
            )
        self._tasks.spawn("reconcile", self.reconciler.run())
        self._tasks.spawn("session", self._session())
        self._tasks.spawn("status", self.reporter.run_status())
        if self._own_heartbeats:
            self._tasks.spawn("heartbeat", self.reporter.run_heartbeats())
        log.info("agent.started", cluster=self.identity.cluster_id, name=self.name)

    async def run_forever(self) -> None:
        """Wait until :meth:`stop` is called; raise the error that made the agent give up."""
        if self._done is None:
            raise RuntimeError("Agent.start() was not called")
        await asyncio.shield(self._done)

    async def stop(self) -> None:
        """Stop in stages: intake, status flush, bus drain, cancel the rest."""
        for key in list(self._subs):
            with contextlib.suppress(BusError):
                await self._subs.pop(key).unsubscribe()
        with contextlib.suppress(TimeoutError, BusError):
            async with asyncio.timeout(_STOP_FLUSH_TIMEOUT):
                await self.reporter.flush()
        await self._tasks.cancel_all()
        await self.bus.close()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        log.info("agent.stopped", name=self.name)

    def _fail(self, exc: BaseException) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    def _crashed(self, task: str, exc: BaseException) -> None:
        self._fail(AgentError(f"agent task {task} crashed: {exc!r}"))

    # --- the session with the bus -------------------------------------------------------

    async def _establish(self) -> Identity:
        return await identity_mod.establish(
            self.bus,
            self.store,
            token=self._token,
            name=self.name,
            labels=self.labels,
            annotations=self.annotations,
            timeout=self.settings.request_timeout,
        )

    async def _session(self) -> None:
        delay = _SYNC_RETRY_INITIAL
        failures = 0
        recheck = True  # the next read follows a new subscription: read again soon after
        rechecking = False  # this read is such a recheck
        while True:
            await self.bus.wait_connected(None)
            seen = self.bus.reconnects()
            try:
                if not self._identified:
                    self._adopt(await self._establish())
                    self._identified = True
                await self.sync()
            except IdentityError as exc:
                log.error("agent.identity_refused", name=self.name, error=str(exc))
                self._fail(exc)
                return
            except BusError as exc:
                # Agents of a site fail together (an overloaded bus): the first
                # failure is news, and the retries must not come in lockstep.
                failures += 1
                emit = log.warning if failures == 1 else log.debug
                emit("agent.sync_failed", name=self.name, error=str(exc), failures=failures)
                await asyncio.sleep(delay * (0.5 + 0.5 * random.random()))
                delay = min(delay * 2, self.settings.identity_retry_max)
                continue
            if failures:
                log.info("agent.sync_recovered", name=self.name, after=failures)
            failures = 0
            delay = _SYNC_RETRY_INITIAL
            if not rechecking:  # a recheck follows a read that already reported in full
                self.reporter.force_full()
            # After a recheck, or a periodic resync, the next read is the periodic
            # one; after a reconnect or a class move, a recheck again.
            timed_out = await self._wait_for_resync(seen, recheck=recheck)
            rechecking = recheck and timed_out
            recheck = not timed_out

    def _cluster_name(self) -> str:
        """The name the control plane registered (and targets by), not the flag's."""
        return self.identity.name if self.identity is not None else self.name

    def _adopt(self, identity: Identity) -> None:
        if self.identity is not None and identity.cluster_id != self.identity.cluster_id:
            log.warning("agent.reregistered", old=self.identity.cluster_id, new=identity.cluster_id)
        self.identity = identity
        self.reporter.identity = identity
        self.reconciler.cluster = identity.cluster_id
        self.reconciler.context = ClusterContext(
            name=identity.name, labels=self.labels, annotations=self.annotations
        )

    async def _wait_for_resync(self, seen: int, *, recheck: bool) -> bool:
        """Wait for a reconnect, a class move or the time to read again; True if the time.

        The live subscription and the snapshot overlap, but a message the server
        routed just before a new subscription reached it, and stored just after the
        snapshot was read, is in neither: so a read after a new subscription is
        followed by a recheck ``snapshot_recheck`` (to twice that) seconds later.
        """
        s = self.settings
        if recheck:
            timeout = s.snapshot_recheck * (1 + random.random())
        else:
            timeout = s.resync_interval * (1 + random.uniform(0, s.resync_jitter))
        reconnect = asyncio.ensure_future(self.bus.wait_reconnect(seen, timeout))
        resync = asyncio.ensure_future(self._resync.wait())
        try:
            await asyncio.wait({reconnect, resync}, return_when=asyncio.FIRST_COMPLETED)
            timed_out = (
                not resync.done()
                and reconnect.done()
                and reconnect.exception() is None
                and reconnect.result() == seen
            )
        finally:
            for waiter in (reconnect, resync):
                waiter.cancel()
            await asyncio.gather(reconnect, resync, return_exceptions=True)
        self._resync.clear()
        return timed_out

    async def sync(self) -> None:
        """Subscribe and read the full desired state; the reconciler learns the result."""
        assert self.identity is not None
        self._syncing = True
        if "schema" not in self._subs:
            self._subs["schema"] = await self.bus.subscribe(subjects.SCHEMA, self._on_schema)
        raw = await self.bus.last_message(subjects.SCHEMA)
        schema = self._decode_schema(subjects.SCHEMA, raw) if raw is not None else None
        # A live schema message can beat the stream's copy of it to a direct get:
        # never step back to an older epoch.
        self._adopt_schema(schema)
        assert self.desired.schema is not None  # _adopt_schema always leaves one
        class_id = class_of(self._cluster_name(), self.labels, self.desired.schema)
        if class_id != self._subscribed_class:
            old = self._subs.pop("class", None)
            if old is not None:
                await old.unsubscribe()
            self.desired.reset_class(class_id)
            # Named before subscribing: a message delivered before subscribe()
            # returns is for this class, and may be one no snapshot finds yet.
            self._subscribed_class = class_id
            try:
                self._subs["class"] = await self.bus.subscribe(
                    subjects.desired_class(class_id), self._desired_handler(Scope.CLASS)
                )
            except BusError:
                self._subscribed_class = ""
                raise
            log.info("agent.class", cluster=self.identity.cluster_id, class_id=class_id)
        cluster_filter = subjects.cluster_desired_all(self.identity.cluster_id)
        if cluster_filter != self._subscribed_cluster:
            old = self._subs.pop("cluster", None)
            if old is not None:
                await old.unsubscribe()
            self._subs["cluster"] = await self.bus.subscribe(
                cluster_filter, self._desired_handler(Scope.CLUSTER)
            )
            self._subscribed_cluster = cluster_filter
        for scope, subject_filter in (
            (Scope.CLASS, subjects.desired_class(class_id)),
            (Scope.CLUSTER, cluster_filter),
        ):
            self.desired.begin_snapshot(scope)
            found = await self.bus.last_messages(subject_filter)
            messages = [m for s, d in found if (m := self._decode_desired(s, d)) is not None]
            self.desired.end_snapshot(scope, messages)
        self._syncing = False
        self.syncs += 1
        self._desired_changed()
        log.info(
            "agent.synced",
            cluster=self.identity.cluster_id,
            class_id=class_id,
            bundles=len(self.desired.effective()),
        )

    # --- incoming messages -----------------------------------------------------------

    def _malformed(self, subject: str, exc: Exception) -> None:
        self.malformed += 1
        log.warning("bus.malformed_message", subject=subject, error=str(exc), count=self.malformed)

    def _decode_schema(self, subject: str, data: bytes) -> ClassSchema | None:
        try:
            return decode(data, SchemaMessage).class_schema
        except DecodeError as exc:
            self._malformed(subject, exc)
            return None

    def _decode_desired(self, subject: str, data: bytes) -> DesiredBundle | None:
        try:
            message = self._decoded.decode(data)
            bundle = subjects.parse_desired_subject(subject)
            if message.bundle != bundle:
                raise DecodeError(f"message for bundle {message.bundle!r} on {subject}")
        except DecodeError as exc:
            self._malformed(subject, exc)
            return None
        return message

    async def _on_schema(self, subject: str, data: bytes) -> None:
        schema = self._decode_schema(subject, data)
        if schema is None or not self._adopt_schema(schema):
            return
        if class_of(self._cluster_name(), self.labels, schema) != self._subscribed_class:
            self._resync.set()

    def _adopt_schema(self, schema: ClassSchema | None) -> bool:
        """Take ``schema`` unless it is older than the one held; True if taken."""
        current = self.desired.schema
        if schema is None or (current is not None and schema.epoch < current.epoch):
            if current is None:
                self.desired.schema = ClassSchema()
            return False
        self.desired.schema = schema
        return True

    def _desired_handler(self, scope: Scope) -> Handler:
        async def handle(subject: str, data: bytes) -> None:
            message = self._decode_desired(subject, data)
            if message is None:
                return
            if scope is Scope.CLASS and subject.split(".")[3] != self._subscribed_class:
                return  # a late message for the class we just left
            if self.desired.offer(scope, message):
                self._desired_changed()

        return handle

    def _desired_changed(self) -> None:
        if self._syncing:
            return
        self.reconciler.set_desired(self.desired.effective())
        try:
            self.store.save_desired(self.desired.saved())
        except StateStoreError as exc:
            log.error("agent.save_failed", path=exc.path, error=str(exc))
