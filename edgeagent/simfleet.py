"""A simulated fleet: N agents with in-memory clusters in one process.

``shoal demo`` and the scale benchmarks need thousands of clusters without
thousands of processes. Every agent here is a real :class:`Agent` (same
identity, desired-state, reconciler and reporter code), with a
:class:`SimulatedCluster` backend and in-memory state, and each still
publishes its own status and heartbeats on its own subjects: clusters'
messages are never merged, so the control plane sees exactly what a real
fleet would send. What is shared is the NATS connections (agents are spread
over a few), on each connection the subscription to each subject (one copy
of a class message per connection, handed to every agent, as a leaf node
does: :mod:`edgeagent.fanout`), and the blob cache, so a rollout downloads
each blob once.

A :class:`ConnectionGroup` puts some agents on connections of their own, to
another URL: a site behind its own uplink. The ``reconnect`` benchmark points
one at a TCP proxy it can cut and restore, so those agents lose the bus and
come back through nats-py's own reconnect path, as a real site would.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

import nats
import structlog
from nats.aio.client import Client

from edgeagent.acks import Acks
from edgeagent.agent import Agent
from edgeagent.blobs import Blobs
from edgeagent.bus import NatsBus
from edgeagent.desired import DecodedMessages
from edgeagent.errors import AgentError, BusUnavailable
from edgeagent.fanout import Fanout
from edgeagent.render import ParseCache
from edgeagent.settings import AgentSettings
from edgeagent.simulated import SimulatedCluster
from edgeagent.store import MemoryBlobCache, MemoryStore

log = structlog.get_logger(__name__)

LabelsFor = Callable[[int], Mapping[str, str]]
DEFAULT_REGISTER_CONCURRENCY = 50
# A registration that timed out is tried again, after 1 s, then 2 s.
REGISTER_ATTEMPTS = 3
REGISTER_RETRY_WAIT = 1.0


def sim_name(index: int) -> str:
    return f"sim-{index:05d}"


async def _connection_error(exc: Exception) -> None:
    """nats-py's default prints a traceback per failed reconnect attempt; one line will do."""
    log.debug("simfleet.connection_error", error=str(exc) or type(exc).__name__)


@dataclass(frozen=True)
class ConnectionGroup:
    """Agents ``members`` (fleet indices) on ``connections`` connections of their own to ``url``."""

    name: str
    url: str
    members: Collection[int]
    connections: int = 1


SHARED_PENDING_BYTES = 64 * 1024 * 1024  # outgoing buffer of a connection agents share
DRIVE_BATCH = 250  # agents whose heartbeats one step of drive_heartbeats sends


class SimulatedFleet:
    """Runs ``count`` simulated agents; ``async with`` starts and stops them all."""

    def __init__(
        self,
        *,
        count: int,
        token: str,
        settings: AgentSettings,
        url: str | None = None,
        clients: list[Client] | None = None,
        connections: int = 1,
        labels_for: LabelsFor | None = None,
        register_concurrency: int = DEFAULT_REGISTER_CONCURRENCY,
        name_for: Callable[[int], str] = sim_name,
        groups: Collection[ConnectionGroup] = (),
        driven_heartbeats: bool = False,
    ) -> None:
        if (url is None) == (clients is None):
            raise ValueError("give exactly one of url= or clients=")
        if groups and clients is not None:
            raise ValueError("connection groups need url=: the fleet opens their connections")
        self.count = count
        self.settings = settings
        self._token = token
        self._url = url
        self._clients: list[Client] = list(clients or [])
        self._owns_clients = clients is None
        self._connections = max(1, connections)
        self._labels_for = labels_for or (lambda _i: {})
        self._concurrency = max(1, register_concurrency)
        self._name_for = name_for
        self.blob_cache = MemoryBlobCache()
        self.parsed = ParseCache()  # every agent renders from one parse per deployment
        self.decoded = DecodedMessages()  # and decodes a class message once
        self.agents: list[Agent] = []
        self.backends: list[SimulatedCluster] = []
        self.failed: dict[str, str] = {}
        self._buses: dict[int, list[NatsBus]] = {}
        self.groups = {g.name: g for g in groups}
        self._group_of = {i: g.name for g in groups for i in g.members}
        self._group_clients: dict[str, list[int]] = {}  # group -> indices into _clients
        self.group_agents: dict[str, list[Agent]] = {g.name: [] for g in groups}
        self._driven = driven_heartbeats
        self._fanouts: list[Fanout] = []

    async def __aenter__(self) -> SimulatedFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, then register and start every agent, a bounded number at a time."""
        if self._owns_clients:
            assert self._url is not None
            for _ in range(self._connections):
                await self._connect(self._url)
            default = len(self._clients)
            for group in self.groups.values():
                self._group_clients[group.name] = [
                    await self._connect(group.url) for _ in range(max(1, group.connections))
                ]
        else:
            default = len(self._clients)
        # The connection's agents share its subscriptions, as behind a leaf node.
        self._fanouts = [Fanout(c) for c in self._clients]
        # One blob downloader per connection: a rollout fetches each blob once.
        loaders = [
            Blobs(
                self.blob_cache,
                NatsBus(self.settings, client=c),
                timeout=self.settings.blob_timeout,
            )
            for c in self._clients
        ]

        def connection_of(index: int) -> int:
            group = self._group_of.get(index)
            if group is None:
                return index % default
            mine = self._group_clients[group]
            return mine[index % len(mine)]

        def build(index: int, connection: int) -> tuple[Agent, NatsBus, SimulatedCluster]:
            name = self._name_for(index)
            seed = None if self.settings.sim_seed is None else self.settings.sim_seed + index
            backend = SimulatedCluster.from_settings(self.settings, seed=seed)
            bus = NatsBus(
                self.settings,
                client=self._clients[connection],
                name=name,
                fanout=self._fanouts[connection],
            )
            if self._owns_clients:
                bus.notify_reconnected()  # promise: our reconnected_cb will wake it
            agent = Agent(
                bus=bus,
                backend=backend,
                store=MemoryStore(),
                blob_cache=self.blob_cache,
                blobs=loaders[connection],
                parsed=self.parsed,
                decoded=self.decoded,
                settings=self.settings,
                name=name,
                labels=self._labels_for(index),
                token=self._token,
                own_heartbeats=not self._driven,
            )
            return agent, bus, backend

        async def launch(index: int) -> Agent | None:
            connection = connection_of(index)
            for attempt in range(1, REGISTER_ATTEMPTS + 1):
                agent, bus, backend = build(index, connection)
                try:
                    await agent.start()
                except BusUnavailable as exc:  # a timeout: the server or this loop is busy
                    if attempt < REGISTER_ATTEMPTS:
                        log.info("simfleet.agent_retry", name=agent.name, error=str(exc))
                        await asyncio.sleep(REGISTER_RETRY_WAIT * attempt)
                        continue
                    self.failed[agent.name] = str(exc)
                    log.warning("simfleet.agent_failed", name=agent.name, error=str(exc))
                    return None
                except AgentError as exc:
                    self.failed[agent.name] = str(exc)
                    log.warning("simfleet.agent_failed", name=agent.name, error=str(exc))
                    return None
                break
            if self._owns_clients:
                self._buses.setdefault(connection, []).append(bus)
            self.backends.append(backend)
            group = self._group_of.get(index)
            if group is not None:
                self.group_agents[group].append(agent)
            return agent

        # A fixed pool of launchers, not one task per agent: at tens of thousands of
        # agents, building them all up front starves the first registrations' replies.
        started: list[Agent | None] = [None] * self.count
        pending = iter(range(self.count))

        async def launcher() -> None:
            for index in pending:
                started[index] = await launch(index)

        await asyncio.gather(*(launcher() for _ in range(min(self._concurrency, self.count))))
        self.agents = [a for a in started if a is not None]
        # The agents live until stop(): out of the cyclic collector's way, a full
        # collection walks what a rollout allocates, not the whole fleet again.
        gc.collect()
        gc.freeze()
        log.info("simfleet.started", agents=len(self.agents), failed=len(self.failed))

    async def _connect(self, url: str) -> int:
        """Open one more shared connection to ``url``; its index in ``_clients``."""
        index = len(self._clients)
        try:
            client = await nats.connect(
                servers=url.split(","),
                name="shoal-simfleet",
                max_reconnect_attempts=-1,
                reconnect_time_wait=self.settings.reconnect_wait,
                allow_reconnect=True,
                reconnected_cb=self._reconnected_cb(index),
                error_cb=_connection_error,
                # Thousands of agents' reports share this connection: with nats-py's
                # 2 MiB default, a server slow to read made every publish wait on
                # a flush of its own instead of joining the next write.
                pending_size=SHARED_PENDING_BYTES,
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            await self._close_clients()
            raise BusUnavailable(f"cannot connect to {url}: {exc!r}") from exc
        self._clients.append(client)
        return index

    def group_connected(self, name: str) -> int:
        """How many of group ``name``'s connections are up right now."""
        return sum(1 for i in self._group_clients.get(name, ()) if self._clients[i].is_connected)

    def group_reconnects(self, name: str) -> int:
        """Reconnects nats-py counted on group ``name``'s connections, summed."""
        return sum(
            int(self._clients[i].stats["reconnects"]) for i in self._group_clients.get(name, ())
        )

    def _reconnected_cb(self, index: int) -> Callable[[], Awaitable[None]]:
        """Tell every bus on connection ``index`` that it reconnected (no polling)."""

        async def reconnected() -> None:
            # Publishes sent before may be lost: stop waiting for their acks.
            Acks.of(self._clients[index]).abandon("the connection was re-established")
            for bus in self._buses.get(index, []):
                bus.notify_reconnected()

        return reconnected

    async def drive_heartbeats(self, *, batch: int = DRIVE_BATCH) -> None:
        """Send every agent's heartbeats from this one task, until cancelled.

        For a fleet built with ``driven_heartbeats=True``. Each agent's own
        :meth:`Reporter.beat` runs, so each still sends its own message on its own
        subject with its own sequence numbers; only the pacing is shared: the
        agents are walked in batches spread evenly over the heartbeat
        interval, instead of one timer per agent. That saves the per-agent
        timer cost a site's separate agents would each pay on their own CPU.
        """
        loop = asyncio.get_running_loop()
        interval = self.settings.heartbeat_interval
        while True:
            agents = list(self.agents)
            batches = max(1, -(-len(agents) // batch))
            start = loop.time()
            for number in range(batches):
                for agent in agents[number * batch : (number + 1) * batch]:
                    await agent.reporter.beat()
                pause = start + interval * (number + 1) / batches - loop.time()
                await asyncio.sleep(max(0.0, pause))

    async def stop(self) -> None:
        await asyncio.gather(*(a.stop() for a in self.agents), return_exceptions=True)
        gc.unfreeze()  # what start() froze can be collected again
        self.agents = []
        await self._close_clients()

    async def _close_clients(self) -> None:
        if not self._owns_clients:
            return
        # The agents have unsubscribed and flushed their status already: close, no drain.
        for client in self._clients:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await client.close()
        self._clients = []

    def ready_count(self) -> int:
        """Clusters whose every desired bundle is Ready here (at least one bundle)."""
        return sum(1 for a in self.agents if a.reconciler.all_ready())

    def malformed(self) -> int:
        return sum(a.malformed for a in self.agents)
