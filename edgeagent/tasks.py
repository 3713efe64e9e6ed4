"""Supervised background tasks: named, logged when they crash, cancelled in order.

Every long-lived coroutine of the agent runs through :class:`TaskSet`, so a
crash is logged with the task's name instead of vanishing with an unretrieved
exception, and shutdown can cancel and await everything with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class TaskSet:
    """Long-lived tasks of one owner; ``on_crash`` learns of a task that died."""

    def __init__(
        self, owner: str, *, on_crash: Callable[[str, BaseException], None] | None = None
    ) -> None:
        self._owner = owner
        self._on_crash = on_crash
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task.crashed", task=task.get_name(), error=repr(exc), exc_info=exc)
            if self._on_crash is not None:
                self._on_crash(task.get_name(), exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self, timeout: float = 5.0) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(tasks, timeout=timeout)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``event``; True if it is set.

    ``asyncio.wait_for`` on Python 3.11 can swallow a cancellation that races
    the event being set (the task then never stops); ``asyncio.timeout`` can't.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Wakeup:
    """A flag one task sleeps on: :meth:`set` wakes it, or its next :meth:`wait` returns at once.

    What ``asyncio.Event`` does for a single waiter, without the list of
    waiters and the loop check on every wait: a process running thousands of
    agents wakes their reconcilers and reporters a few times per rollout each.
    A second task waiting at the same time is a bug, and an error.
    """

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if self._flag:
            return
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        if self._flag:
            return
        if self._waiter is not None:
            raise RuntimeError("Wakeup.wait: another task is already waiting")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
