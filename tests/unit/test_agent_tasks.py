"""The agent's task helpers: the single-waiter wake-up flag and the shared alarm clock."""

from __future__ import annotations

import asyncio
import gc

import pytest

from edgeagent.tasks import AlarmClock, Wakeup


async def test_a_wakeup_set_before_the_wait_returns_at_once_until_cleared() -> None:
    wakeup = Wakeup()
    wakeup.set()
    async with asyncio.timeout(1.0):
        await wakeup.wait()
    assert wakeup.is_set()
    wakeup.clear()
    waiter = asyncio.create_task(wakeup.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    waiter.cancel()


async def test_a_wakeup_set_during_the_wait_wakes_the_waiter() -> None:
    wakeup = Wakeup()
    waiter = asyncio.create_task(wakeup.wait())
    await asyncio.sleep(0)
    asyncio.get_running_loop().call_later(0.01, wakeup.set)
    async with asyncio.timeout(1.0):
        await waiter


async def test_a_cancelled_wait_leaves_the_wakeup_usable() -> None:
    wakeup = Wakeup()
    waiter = asyncio.create_task(wakeup.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    second = asyncio.create_task(wakeup.wait())
    await asyncio.sleep(0)
    wakeup.set()
    async with asyncio.timeout(1.0):
        await second


async def test_a_second_waiter_at_the_same_time_is_an_error() -> None:
    wakeup = Wakeup()
    first = asyncio.create_task(wakeup.wait())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already waiting"):
        await wakeup.wait()
    wakeup.set()
    await first


async def test_alarms_ring_slot_by_slot_never_early_and_a_slot_shares_one_loop_timer() -> None:
    loop = asyncio.get_running_loop()
    clock = AlarmClock(resolution=0.01)
    base = (int(loop.time() / 0.01) + 2) * 0.01  # the start of a slot 10-20 ms away
    rung: list[tuple[str, float]] = []

    def ring(name: str, due: float) -> None:
        rung.append((name, loop.time() - due))

    clock.at(base + 0.035, ring, "late", base + 0.035)
    clock.at(base + 0.001, ring, "soon", base + 0.001)
    timers = len(loop._scheduled)  # type: ignore[attr-defined]
    clock.at(base + 0.009, ring, "same slot, later", base + 0.009)
    clock.at(base + 0.002, ring, "same slot, added last", base + 0.002)
    assert len(loop._scheduled) == timers  # type: ignore[attr-defined]
    await asyncio.sleep(base + 0.08 - loop.time())
    assert [name for name, _ in rung] == [
        "soon",
        "same slot, later",
        "same slot, added last",
        "late",
    ]
    assert all(0 <= lateness < 0.05 for _, lateness in rung), rung
    assert clock.pending == 0


async def test_a_cancelled_alarm_stays_silent_and_a_failing_one_spares_the_others() -> None:
    loop = asyncio.get_running_loop()
    clock = AlarmClock(resolution=0.01)
    rung: list[str] = []
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        due = loop.time() + 0.02

        def broken() -> None:
            raise ValueError("boom")

        cancelled = clock.at(due, rung.append, "cancelled")
        clock.at(due, broken)
        clock.at(due, rung.append, "after the broken one")
        cancelled.cancel()
        assert cancelled.cancelled()
        assert clock.pending == 2
        await asyncio.sleep(0.06)
    finally:
        loop.set_exception_handler(None)
    assert rung == ["after the broken one"]
    assert [type(c["exception"]) for c in errors] == [ValueError]


async def test_every_agent_in_a_loop_shares_one_alarm_clock() -> None:
    loop = asyncio.get_running_loop()
    assert AlarmClock.of(loop) is AlarmClock.of(loop)


async def test_the_shared_clock_keeps_no_event_loop_alive() -> None:
    other = asyncio.new_event_loop()
    try:
        clock = AlarmClock.of(other)
    finally:
        other.close()
    del other
    gc.collect()
    assert clock not in AlarmClock._shared.values()


async def test_a_sleep_on_the_clock_wakes_after_its_delay_and_a_cancelled_one_leaves_nothing() -> (
    None
):
    loop = asyncio.get_running_loop()
    clock = AlarmClock(resolution=0.01)
    start = loop.time()
    await clock.sleep(0.03)
    assert 0.03 <= loop.time() - start < 0.1
    sleeper = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    assert clock.pending == 1
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert clock.pending == 0
