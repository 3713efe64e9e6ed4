"""Supervised background tasks, and how the agent's tasks sleep and wake.

Every long-lived coroutine of the agent runs through :class:`TaskSet`, so a
crash is logged with the task's name instead of vanishing with an unretrieved
exception, and shutdown can cancel and await everything with a timeout.
:class:`Wakeup` is the flag a reconciler or reporter sleeps on, and
:class:`AlarmClock` the timers that set it.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

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


ALARM_RESOLUTION = 0.005  # seconds: alarms due within one such slot share a loop timer


class Alarm:
    """A callback :class:`AlarmClock` calls once when it is due, unless cancelled."""

    __slots__ = ("args", "callback")

    def __init__(self, callback: Callable[..., object], args: tuple[object, ...]) -> None:
        self.callback: Callable[..., object] | None = callback
        self.args = args

    def cancel(self) -> None:
        self.callback, self.args = None, ()

    def cancelled(self) -> bool:
        return self.callback is None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AlarmClock:
    """Timers for many agents in one event loop, one loop timer per time slot.

    The loop keeps its timers in a heap, and a process running tens of
    thousands of agents keeps several alarms per agent there: every timer made
    or fired then costs a walk down a deep heap. Here, alarms due within the
    same :data:`ALARM_RESOLUTION` slot share one loop timer, and each rings in
    the first slot that ends after its time, never before it: a few
    milliseconds late at most. A cancelled alarm stays in its slot, silent,
    until the slot comes. A lone agent pays nothing for it.
    """

    _shared: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AlarmClock]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, *, resolution: float = ALARM_RESOLUTION) -> None:
        # No reference to the loop: the loop keys the shared clocks weakly.
        self._resolution = resolution
        self._slots: dict[int, list[Alarm]] = {}

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> AlarmClock:
        """The clock every agent in ``loop`` shares."""
        clock = cls._shared.get(loop)
        if clock is None:
            clock = cls._shared[loop] = cls()
        return clock

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    @property
    def pending(self) -> int:
        """Alarms not yet rung or cancelled."""
        return sum(1 for due in self._slots.values() for a in due if a.callback is not None)

    def at(self, when: float, callback: Callable[..., object], *args: object) -> Alarm:
        """Call ``callback(*args)`` once the running loop's clock passes ``when``."""
        slot = int(when / self._resolution) + 1
        alarm = Alarm(callback, args)
        due = self._slots.get(slot)
        if due is None:
            due = self._slots[slot] = []
            asyncio.get_running_loop().call_at(slot * self._resolution, self._ring, slot)
        due.append(alarm)
        return alarm

    async def sleep(self, delay: float) -> None:
        """``asyncio.sleep(delay)``, on this clock."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        alarm = self.at(loop.time() + delay, _wake, waiter)
        try:
            await waiter
        finally:
            alarm.cancel()

    def _ring(self, slot: int) -> None:
        for alarm in self._slots.pop(slot, ()):
            callback, args = alarm.callback, alarm.args
            if callback is None:
                continue
            alarm.cancel()
            try:
                callback(*args)
            except Exception as exc:  # one broken callback must not silence the slot
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "alarm callback failed", "exception": exc}
                )
