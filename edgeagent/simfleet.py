"""A simulated fleet: N agents with in-memory clusters in one process.

``shoal demo`` and the scale benchmarks need thousands of clusters without
thousands of processes. Every agent here is a real :class:`Agent` (same
identity, desired-state, reconciler and reporter code), with a
:class:`SimulatedCluster` backend and in-memory state, and each still
publishes its own status and heartbeats on its own subjects: clusters'
messages are never merged, so the control plane sees exactly what a real
fleet would send. What is shared is the NATS connections (agents are spread
over a few) and the blob cache, so a rollout downloads each blob once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping

import nats
import structlog
from nats.aio.client import Client

from edgeagent.agent import Agent
from edgeagent.blobs import Blobs
from edgeagent.bus import NatsBus
from edgeagent.errors import AgentError, BusUnavailable
from edgeagent.render import ParseCache
from edgeagent.settings import AgentSettings
from edgeagent.simulated import SimulatedCluster
from edgeagent.store import MemoryBlobCache, MemoryStore

log = structlog.get_logger(__name__)

LabelsFor = Callable[[int], Mapping[str, str]]
DEFAULT_REGISTER_CONCURRENCY = 50


def sim_name(index: int) -> str:
    return f"sim-{index:05d}"


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
    ) -> None:
        if (url is None) == (clients is None):
            raise ValueError("give exactly one of url= or clients=")
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
        self.agents: list[Agent] = []
        self.backends: list[SimulatedCluster] = []
        self.failed: dict[str, str] = {}
        self._buses: dict[int, list[NatsBus]] = {}

    async def __aenter__(self) -> SimulatedFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, then register and start every agent, a bounded number at a time."""
        if self._owns_clients:
            assert self._url is not None
            for index in range(self._connections):
                try:
                    client = await nats.connect(
                        servers=self._url.split(","),
                        name="shoal-simfleet",
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=self.settings.reconnect_wait,
                        allow_reconnect=True,
                        reconnected_cb=self._reconnected_cb(index),
                    )
                except (nats.errors.Error, OSError, TimeoutError) as exc:
                    await self._close_clients()
                    raise BusUnavailable(f"cannot connect to {self._url}: {exc!r}") from exc
                self._clients.append(client)
        gate = asyncio.Semaphore(self._concurrency)
        # One blob downloader per connection: a rollout fetches each blob once.
        loaders = [
            Blobs(
                self.blob_cache,
                NatsBus(self.settings, client=c),
                timeout=self.settings.blob_timeout,
            )
            for c in self._clients
        ]

        async def launch(index: int) -> Agent | None:
            name = self._name_for(index)
            client = self._clients[index % len(self._clients)]
            seed = None if self.settings.sim_seed is None else self.settings.sim_seed + index
            backend = SimulatedCluster.from_settings(self.settings, seed=seed)
            bus = NatsBus(self.settings, client=client, name=name)
            if self._owns_clients:
                bus.notify_reconnected()  # promise: our reconnected_cb will wake it
                self._buses.setdefault(index % len(self._clients), []).append(bus)
            agent = Agent(
                bus=bus,
                backend=backend,
                store=MemoryStore(),
                blob_cache=self.blob_cache,
                blobs=loaders[index % len(loaders)],
                parsed=self.parsed,
                settings=self.settings,
                name=name,
                labels=self._labels_for(index),
                token=self._token,
            )
            async with gate:
                try:
                    await agent.start()
                except AgentError as exc:
                    self.failed[name] = str(exc)
                    log.warning("simfleet.agent_failed", name=name, error=str(exc))
                    return None
            self.backends.append(backend)
            return agent

        started = await asyncio.gather(*(launch(i) for i in range(self.count)))
        self.agents = [a for a in started if a is not None]
        log.info("simfleet.started", agents=len(self.agents), failed=len(self.failed))

    def _reconnected_cb(self, index: int) -> Callable[[], Awaitable[None]]:
        """Tell every bus on connection ``index`` that it reconnected (no polling)."""

        async def reconnected() -> None:
            for bus in self._buses.get(index, []):
                bus.notify_reconnected()

        return reconnected

    async def stop(self) -> None:
        await asyncio.gather(*(a.stop() for a in self.agents), return_exceptions=True)
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
