"""The control plane process: ``shoal server``.

:class:`ControlPlane` wires the pieces together. Its constructor only stores
settings; ``start()`` does the I/O in order: the embedded nats-server unless
``nats_url`` is given, the connection, streams and buckets (idempotently), the
fleet's state from KV and streams, the desired-state sync, then the request
endpoints and ingest tasks. ``stop()`` reverses it in stages: stop intake,
cancel tasks, drain the connection, stop the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from types import TracebackType

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from controlplane import streams
from controlplane.api import Api
from controlplane.embedded import EmbeddedNats
from controlplane.errors import BusError
from controlplane.fleet import Fleet
from controlplane.gitdeploy import Deployer
from controlplane.gitrepos import GitRepos
from controlplane.gitsync import GitCli
from controlplane.ingest import Ingest
from controlplane.publisher import DesiredPublisher
from controlplane.settings import ServerSettings
from controlplane.shards import ShardLeases, leases_bucket
from controlplane.tasks import TaskSet
from controlplane.webhook import WebhookServer

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 10.0
FIRST_CONNECT_TIMEOUT = 30.0
DRAIN_TIMEOUT = 5.0
RESYNC_INTERVAL = 5.0


class ControlPlane:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.counters: Counter[str] = Counter()
        self.embedded: EmbeddedNats | None = None
        self.url = settings.nats_url or ""
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._fleet: Fleet | None = None
        self._tasks = TaskSet("controlplane")
        self._stopping = False
        self.leases: ShardLeases | None = None
        self.gitrepos: GitRepos | None = None
        self.webhook: WebhookServer | None = None
        self.ingest: Ingest | None = None

    @property
    def fleet(self) -> Fleet:
        if self._fleet is None:
            raise RuntimeError("control plane not started")
        return self._fleet

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        settings = self.settings
        if not settings.nats_url:
            self.embedded = EmbeddedNats(
                store_dir=settings.data_dir, host=settings.host, port=settings.port
            )
            self.url = await self.embedded.start()
        try:
            await self._start_on_bus()
        except BaseException:
            await self.stop()
            raise
        log.info("controlplane.started", url=self.url, clusters=len(self.fleet.registry))

    async def _start_on_bus(self) -> None:
        settings = self.settings
        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    servers=self.url.split(","),
                    name="shoal-controlplane",
                    connect_timeout=CONNECT_TIMEOUT,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    disconnected_cb=self._on_disconnect,
                    reconnected_cb=self._on_reconnect,
                    error_cb=self._on_error,
                ),
                FIRST_CONNECT_TIMEOUT,
            )
        except TimeoutError as exc:
            raise BusError(
                f"cannot connect to NATS at {self.url} within {FIRST_CONNECT_TIMEOUT:.0f} s; "
                "check --nats-url, or leave it out to run an embedded NATS"
            ) from exc
        except Exception as exc:  # nats raises OSError and its own errors
            raise BusError(f"cannot connect to NATS at {self.url}: {exc}") from exc
        self._js = self._nc.jetstream(timeout=settings.request_timeout)
        stores = await streams.ensure(self._js, replicas=settings.replicas)
        await streams.fix_shard_count(stores.meta, settings.shards)
        publisher = DesiredPublisher(
            self._js, timeout=settings.request_timeout, purge_grace=settings.class_purge_grace
        )
        self._fleet = Fleet(stores, publisher, settings)
        followers = await self._fleet.load()
        for follower in followers:
            self._tasks.spawn("kv-follow", follower.follow())
        self.gitrepos = GitRepos(
            self._nc,
            await streams.ensure_git(self._js, replicas=settings.replicas),
            fleet=self._fleet,
            deployer=Deployer(self._fleet, stores.blobs),
            git=GitCli(settings.git_cache_path, timeout=settings.git_timeout),
            settings=settings,
        )
        for follower in await self.gitrepos.load():
            self._tasks.spawn("kv-follow", follower.follow())
        ingest = Ingest(self._nc, self._js, self._fleet, settings, self.counters, tasks=self._tasks)
        self.ingest = ingest
        self.leases = ShardLeases(
            await leases_bucket(self._js, ttl=settings.lease_ttl, replicas=settings.replicas),
            replica=settings.replica_id,
            shards=settings.shards,
            ttl=settings.lease_ttl,
            on_acquire=ingest.start_shard,
            on_release=ingest.stop_shard,
            on_leadership=self._leadership,
        )
        api = Api(
            self._nc,
            self._fleet,
            self.counters,
            replica=settings.replica_id,
            shards=settings.shards,
            owned=lambda: self.leases.owned if self.leases else (),
            gitrepos=self.gitrepos,
        )
        await api.start()
        await self.leases.tick()  # take our share (all shards, when alone) before serving
        self._tasks.spawn("leases", self.leases.run())
        self._tasks.spawn("offline-sweep", ingest.sweep_offline())
        self._tasks.spawn("parked-status", ingest.retry_parked_forever())
        self._tasks.spawn("unreported-status", ingest.recover_unreported_forever())
        self._tasks.spawn("resync", self._resync_loop())
        self._tasks.spawn("gitrepos", self.gitrepos.run())
        if settings.webhook_listen:
            secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
            self.webhook = WebhookServer(
                self.gitrepos,
                listen=settings.webhook_listen,
                secret=secret,
                max_body=settings.webhook_max_body,
            )
            await self.webhook.start()
        await self._nc.flush()

    async def _leadership(self, leader: bool) -> None:
        """The leader publishes desired state and polls gitrepos; both follow the lease."""
        await self.fleet.set_leader(leader)
        if self.gitrepos is not None:
            await self.gitrepos.set_leader(leader)

    async def _resync_loop(self) -> None:
        """Retarget now and then: retries a publish that failed and purges orphaned classes."""
        while True:
            await asyncio.sleep(RESYNC_INTERVAL)
            try:
                await self.fleet.retarget()
            except Exception as exc:  # a bus failure: log it, try again next round
                log.warning("desired.resync.failed", error=repr(exc))

    async def stop(self) -> None:
        self._stopping = True
        if self.webhook is not None:
            await self.webhook.stop()
        if self.leases is not None:
            with contextlib.suppress(Exception):  # best effort: the TTL frees them anyway
                await asyncio.wait_for(self.leases.release_all(), DRAIN_TIMEOUT)
        if self.gitrepos is not None:
            await self.gitrepos.stop()
        await self._tasks.cancel_all()
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), DRAIN_TIMEOUT)
            with contextlib.suppress(Exception):
                await nc.close()
        if self.embedded is not None:
            await self.embedded.stop()
        log.info("controlplane.stopped")

    async def _on_disconnect(self) -> None:
        if not self._stopping:
            log.warning("nats.disconnected", url=self.url)

    async def _on_reconnect(self) -> None:
        log.info("nats.reconnected", url=self.url)

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats.error", error=repr(exc))


async def run_server(settings: ServerSettings, *, ready: asyncio.Event | None = None) -> None:
    """Run until cancelled (the CLI cancels on SIGINT/SIGTERM)."""
    async with ControlPlane(settings) as plane:
        log.info("controlplane.listening", url=plane.url)
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
