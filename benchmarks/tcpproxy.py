"""A TCP proxy on 127.0.0.1 that can be cut and restored: a site's uplink, for ``reconnect``.

Some simulated clusters reach nats-server through this proxy instead of
directly. :meth:`CuttableProxy.cut` aborts every open connection (both sides,
so nats-server drops those clients' subscriptions at once, as it would when a
site's link dies) and refuses new ones until :meth:`CuttableProxy.restore`.
The agents' clients see a dead socket, retry on their own reconnect timer and
get through once the link is back: nats-py's reconnect path and the agents'
re-read of their full state (invariant 2) run for real, nothing is simulated.
"""

from __future__ import annotations

import asyncio
import contextlib

from benchmarks.harness import LOCALHOST

CHUNK = 64 * 1024
CLOSE_TIMEOUT = 5.0


class CuttableProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; ``async with`` starts and closes it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.cuts = 0
        self.refused = 0

    @classmethod
    def to_url(cls, url: str) -> CuttableProxy:
        """A proxy for ``nats://host:port``."""
        host, _, port = url.removeprefix("nats://").rpartition(":")
        return cls(host, int(port))

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    async def __aenter__(self) -> CuttableProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOCALHOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Abort every forwarded connection and refuse new ones."""
        self._open = False
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self._open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT)
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        if not self._open:  # cut while we connected
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(CHUNK):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(dst)
            dst.transport.abort()
