"""The agent's task helpers: the single-waiter wake-up flag."""

from __future__ import annotations

import asyncio

import pytest

from edgeagent.tasks import Wakeup


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
