"""Request/reply endpoints: agent registration and hello, and the admin API.

Every handler decodes its request with the protocol codec, calls into
:class:`~controlplane.fleet.Fleet`, and replies with a protocol message. A
refused request gets an :class:`ErrorReply` with a stable ``code``; a request
that cannot be decoded is counted and answered with code ``bad_request``;
nothing a client sends can crash the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from controlplane.errors import RequestRejected
from controlplane.fleet import Fleet
from controlplane.gitrepos import GitRepos
from protocol import admin, codec, subjects
from protocol.errors import DecodeError
from protocol.messages import (
    ErrorReply,
    HelloReply,
    HelloRequest,
    RegisterReply,
    RegisterRequest,
    WireMessage,
)

log = structlog.get_logger(__name__)

Handler = Callable[[bytes, str], Awaitable[WireMessage]]

# Requests served at once; registrations of a fleet arrive in bursts, and each
# waits on KV round trips, so serving them one by one would leave the CPU idle.
MAX_IN_FLIGHT = 64

# How long a status summary waits for the replicas owning every shard to answer.
GATHER_TIMEOUT = 2.0


class Api:
    def __init__(
        self,
        nc: Client,
        fleet: Fleet,
        counters: Counter[str],
        *,
        replica: str,
        shards: int,
        owned: Callable[[], Iterable[int]],
        gitrepos: GitRepos | None = None,
    ) -> None:
        self._nc = nc
        self._fleet = fleet
        self.counters = counters
        self._replica = replica
        self._shards = shards
        self._owned = owned
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._in_flight: set[asyncio.Task[None]] = set()
        self.handlers: dict[str, Handler] = {
            subjects.REGISTER: self.register,
            admin.TokenCreate.OP: self.token_create,
            admin.BundleApply.OP: self.bundle_apply,
            admin.BundleDelete.OP: self.bundle_delete,
            admin.BundleList.OP: self.bundle_list,
            admin.ClusterList.OP: self.cluster_list,
            admin.GroupSet.OP: self.group_set,
            admin.GroupDelete.OP: self.group_delete,
            admin.GroupList.OP: self.group_list,
            admin.Stats.OP: self.stats,
        }
        self._gitrepos = gitrepos
        if gitrepos is not None:
            self.handlers.update(
                {
                    admin.GitRepoSet.OP: self.gitrepo_set,
                    admin.GitRepoDelete.OP: self.gitrepo_delete,
                    admin.GitRepoList.OP: self.gitrepo_list,
                    admin.GitSecretSet.OP: self.git_secret_set,
                    admin.GitSecretDelete.OP: self.git_secret_delete,
                    admin.GitSecretList.OP: self.git_secret_list,
                }
            )

    async def start(self) -> None:
        await self._nc.subscribe(subjects.REGISTER, queue="shoal-api", cb=self._dispatch)
        await self._nc.subscribe(subjects.admin(">"), queue="shoal-api", cb=self._dispatch)
        await self._nc.subscribe(
            f"{subjects.PREFIX}.agent.*.hello", queue="shoal-api", cb=self._dispatch
        )
        await self._nc.subscribe(subjects.INTERNAL_SUMMARY, cb=self._summary)
        # The server knows the subscriptions once this returns: a request sent right
        # after start() finds a responder.
        await self._nc.flush()

    async def _dispatch(self, msg: Msg) -> None:
        """Serve requests concurrently, up to MAX_IN_FLIGHT; beyond that, intake waits."""
        if not msg.reply:
            self.counters["requests_without_reply"] += 1
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._serve(msg), name=f"api:{msg.subject}")
        self._in_flight.add(task)
        task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def _serve(self, msg: Msg) -> None:
        subject = msg.subject
        if subject.endswith(".hello"):
            handler: Handler | None = self.hello
        elif subject == subjects.REGISTER:
            handler = self.register
        else:
            handler = self.handlers.get(subject.removeprefix(f"{subjects.PREFIX}.admin."))
        try:
            if handler is None:
                raise RequestRejected(f"unknown operation {subject!r}")
            reply = await handler(msg.data, subject)
        except DecodeError as exc:
            self.counters["requests_malformed"] += 1
            log.warning("api.request.malformed", subject=subject, error=str(exc))
            reply = ErrorReply(code="bad_request", error=f"malformed request on {subject}: {exc}")
        except RequestRejected as exc:
            self.counters["requests_rejected"] += 1
            log.info("api.request.rejected", subject=subject, code=exc.code, error=str(exc))
            reply = ErrorReply(code=exc.code, error=str(exc))
        except Exception as exc:  # a bug or a bus failure: report it, keep serving
            self.counters["requests_failed"] += 1
            log.exception("api.request.failed", subject=subject)
            reply = ErrorReply(code="internal", error=f"{type(exc).__name__}: {exc}")
        else:
            self.counters["requests_ok"] += 1
        with contextlib.suppress(Exception):  # the requester or the connection went away
            await self._nc.publish(msg.reply, codec.encode(reply))

    # -- agents --------------------------------------------------------------

    async def register(self, data: bytes, subject: str) -> WireMessage:
        request = codec.decode(data, RegisterRequest)
        record, secret = await self._fleet.register(
            token=request.token,
            name=request.name,
            labels=request.labels,
            annotations=request.annotations,
        )
        return RegisterReply(cluster_id=record.id, secret=secret, shard=record.shard)

    async def hello(self, data: bytes, subject: str) -> WireMessage:
        request = codec.decode(data, HelloRequest)
        cluster_id = subject.split(".")[3]
        record = await self._fleet.hello(
            cluster_id,
            secret=request.secret,
            labels=request.labels,
            annotations=request.annotations,
        )
        return HelloReply(name=record.name, shard=record.shard)

    # -- admin ---------------------------------------------------------------

    async def token_create(self, data: bytes, subject: str) -> WireMessage:
        request = codec.decode(data, admin.TokenCreate)
        if request.ttl_seconds <= 0:
            raise RequestRejected("token TTL must be positive")
        token, expires_at = await self._fleet.tokens.create(
            ttl_seconds=request.ttl_seconds, description=request.description
        )
        log.info("token.created", expires_at=expires_at)
        return admin.TokenCreated(token=token, expires_at=expires_at)

    async def bundle_apply(self, data: bytes, subject: str) -> WireMessage:
        return await self._fleet.apply_bundle(codec.decode(data, admin.BundleApply))

    async def bundle_delete(self, data: bytes, subject: str) -> WireMessage:
        return await self._fleet.delete_bundle(codec.decode(data, admin.BundleDelete).name)

    async def bundle_list(self, data: bytes, subject: str) -> WireMessage:
        codec.decode(data, admin.BundleList)
        parts, missing = await self.gather(with_clusters=False)
        return admin.BundleListReply(
            bundles=tuple(self._fleet.bundle_summaries(parts)), missing_shards=missing
        )

    async def cluster_list(self, data: bytes, subject: str) -> WireMessage:
        codec.decode(data, admin.ClusterList)
        parts, missing = await self.gather(with_clusters=True)
        return admin.ClusterListReply(
            clusters=tuple(self._fleet.cluster_summaries(parts)), missing_shards=missing
        )

    # -- the fleet's status, gathered from the replicas that own its shards --

    async def _summary(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            request = codec.decode(msg.data, admin.ShardSummaryRequest)
        except DecodeError as exc:
            self.counters["requests_malformed"] += 1
            log.warning("api.request.malformed", subject=msg.subject, error=str(exc))
            return
        if request.replica == self._replica:
            return  # its own request: gather took this part directly
        part = self._fleet.shard_summary(
            self._replica, self._owned(), with_clusters=request.with_clusters
        )
        await self._nc.publish(msg.reply, codec.encode(part))

    async def gather(self, *, with_clusters: bool) -> tuple[list[admin.ShardSummary], int]:
        """Every replica's part, until all shards are covered or GATHER_TIMEOUT passes.

        This replica's own part is taken here, not over the bus: under load its
        way back through the bus waits behind the reports this replica has yet to
        ingest, and a lone replica would then answer with nothing at all.
        Returns the parts and how many shards none of them covered.
        """
        own = self._fleet.shard_summary(self._replica, self._owned(), with_clusters=with_clusters)
        parts = [own]
        covered = set(own.shards)
        if len(covered) >= self._shards:
            return parts, 0
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_TIMEOUT
        try:
            request = admin.ShardSummaryRequest(with_clusters=with_clusters, replica=self._replica)
            await self._nc.publish(subjects.INTERNAL_SUMMARY, codec.encode(request), reply=inbox)
            while len(covered) < self._shards:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self.counters["summaries_incomplete"] += 1
                    log.warning("api.summary.incomplete", missing=self._shards - len(covered))
                    break
                try:
                    msg = await sub.next_msg(timeout=remaining)
                except (TimeoutError, NatsTimeoutError):
                    continue
                try:
                    part = codec.decode(msg.data, admin.ShardSummary)
                except DecodeError:
                    self.counters["requests_malformed"] += 1
                    continue
                fresh = set(part.shards) - covered
                if fresh or not part.shards:
                    parts.append(part)
                covered |= fresh
        finally:
            await sub.unsubscribe()
        return parts, max(0, self._shards - len(covered))

    async def group_set(self, data: bytes, subject: str) -> WireMessage:
        await self._fleet.set_group(codec.decode(data, admin.GroupSet).group)
        return admin.Ok()

    async def group_delete(self, data: bytes, subject: str) -> WireMessage:
        await self._fleet.delete_group(codec.decode(data, admin.GroupDelete).name)
        return admin.Ok()

    async def group_list(self, data: bytes, subject: str) -> WireMessage:
        codec.decode(data, admin.GroupList)
        groups = tuple(self._fleet.groups[name] for name in sorted(self._fleet.groups))
        return admin.GroupListReply(groups=groups)

    async def stats(self, data: bytes, subject: str) -> WireMessage:
        codec.decode(data, admin.Stats)
        counters = dict(self.counters)
        counters["desired_publishes"] = self._fleet.publisher.publishes
        counters["clusters"] = len(self._fleet.registry)
        counters["classes"] = len(self._fleet.registry.classes)
        counters["bundles"] = len(self._fleet.bundles)
        counters["shards_owned"] = len(list(self._owned()))
        counters["leader"] = int(self._fleet.leader)
        return admin.StatsReply(counters=counters)

    # -- gitrepos ------------------------------------------------------------

    @property
    def gitrepos(self) -> GitRepos:
        if self._gitrepos is None:
            raise RequestRejected("this control plane serves no gitrepos")
        return self._gitrepos

    async def gitrepo_set(self, data: bytes, subject: str) -> WireMessage:
        return await self.gitrepos.set(codec.decode(data, admin.GitRepoSet).spec)

    async def gitrepo_delete(self, data: bytes, subject: str) -> WireMessage:
        return await self.gitrepos.delete(codec.decode(data, admin.GitRepoDelete).name)

    async def gitrepo_list(self, data: bytes, subject: str) -> WireMessage:
        request = codec.decode(data, admin.GitRepoList)
        self.gitrepos.infos(request.name, {})  # an unknown name fails before gathering
        parts, _ = await self.gather(with_clusters=False)
        summaries = {b.name: b for b in self._fleet.bundle_summaries(parts)}
        return self.gitrepos.infos(request.name, summaries)

    async def git_secret_set(self, data: bytes, subject: str) -> WireMessage:
        request = codec.decode(data, admin.GitSecretSet)
        await self.gitrepos.secrets.set(request.name, request.credentials)
        return admin.Ok()

    async def git_secret_delete(self, data: bytes, subject: str) -> WireMessage:
        await self.gitrepos.secrets.delete(codec.decode(data, admin.GitSecretDelete).name)
        return admin.Ok()

    async def git_secret_list(self, data: bytes, subject: str) -> WireMessage:
        codec.decode(data, admin.GitSecretList)
        return await self.gitrepos.secrets.list()
