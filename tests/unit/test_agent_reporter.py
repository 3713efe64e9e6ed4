"""The reporter backs off after failed status reports instead of retrying in lockstep."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from edgeagent.errors import BusUnavailable
from edgeagent.membus import MemoryBus
from edgeagent.reporter import Reporter
from edgeagent.settings import AgentSettings
from edgeagent.store import Identity
from protocol.codec import decode
from protocol.messages import BundleStatus, StatusReport
from protocol.states import State

IDENTITY = Identity(cluster_id="c-1", secret="s", shard=3, name="shop-1")


@dataclass
class Source:
    version: int = 1
    state: State = State.READY

    def statuses(self) -> tuple[BundleStatus, ...]:
        return (BundleStatus(bundle="web", deployment_id="s-1:0", state=self.state),)


class AckTimeouts(MemoryBus):
    """Connected, but JetStream acks do not come back in time until ``healed``."""

    healed: bool = False

    async def publish_durable(self, subject: str, payload: bytes) -> None:
        if not self.healed:
            raise BusUnavailable(f"no ack for {subject} within 5 s")
        await super().publish_durable(subject, payload)


def reporter(bus: MemoryBus, source: Source) -> Reporter:
    settings = AgentSettings(status_interval=1.0, retry_max=60.0)
    return Reporter(bus, source, settings, identity=IDENTITY, clock=lambda: 1_000.0)


async def test_failed_reports_back_off_with_jitter_within_growing_windows() -> None:
    bus = AckTimeouts()
    rep = reporter(bus, Source())
    assert rep.retry_delay() == 1.0
    windows = {1: (1.0, 2.0), 2: (2.0, 4.0), 3: (4.0, 8.0), 6: (30.0, 60.0), 12: (30.0, 60.0)}
    for failures in range(1, 13):
        assert not await rep.flush()
        assert rep.failures == failures
        if failures in windows:
            low, high = windows[failures]
            delays = {rep.retry_delay() for _ in range(50)}
            assert all(low <= d <= high for d in delays), (failures, min(delays), max(delays))
            assert len(delays) > 1  # jittered: agents that failed together spread out
    assert rep.dirty  # nothing was lost: the report is still due


async def test_recovery_sends_the_latest_state_and_resets_the_backoff() -> None:
    bus = AckTimeouts()
    source = Source(state=State.NOT_READY)
    rep = reporter(bus, source)
    for _ in range(4):
        await rep.flush()
    source.state, source.version = State.READY, 2
    bus.healed = True
    assert await rep.flush()
    assert rep.failures == 0
    assert rep.retry_delay() == 1.0
    [(subject, payload)] = bus.durable
    assert subject == "shoal.v1.status.3.c-1"
    report = decode(payload, StatusReport)
    assert [b.state for b in report.bundles] == [State.READY]
    assert not rep.dirty


async def test_a_burst_of_changes_goes_out_as_one_report() -> None:
    """WaitApplied, NotReady, Ready within a moment: the control plane gets Ready, once."""
    bus = MemoryBus()
    source = Source(state=State.WAIT_APPLIED)
    settings = AgentSettings(status_interval=1.0, status_settle=0.2)
    rep = Reporter(bus, source, settings, identity=IDENTITY, clock=lambda: 1_000.0)
    task = asyncio.create_task(rep.run_status())
    try:
        for version, state in enumerate((State.NOT_READY, State.READY), start=2):
            await asyncio.sleep(0.05)
            source.state, source.version = state, version
            rep.notify()
        await asyncio.sleep(0.4)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    [(_, payload)] = bus.durable
    assert [b.state for b in decode(payload, StatusReport).bundles] == [State.READY]
