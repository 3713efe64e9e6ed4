"""Running shoal as a user does: `shoal server` and `shoal agent` processes, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

SHOAL = [str(Path(sys.executable).parent / "shoal")]
T = TypeVar("T")

# Fast intervals so convergence takes seconds; the same variables a user would set.
FAST_ENV = {
    "SHOAL_STATUS_INTERVAL": "0.2",
    "SHOAL_HEARTBEAT_INTERVAL": "0.5",
    "SHOAL_OBSERVE_INTERVAL_NOT_READY": "0.2",
    "SHOAL_OBSERVE_INTERVAL": "1",
    "SHOAL_SIM_READINESS_DELAY": "0.3",
    "SHOAL_HEARTBEAT_TIMEOUT": "3",
    "SHOAL_OFFLINE_CHECK_INTERVAL": "0.2",
    "SHOAL_STARTUP_GRACE": "5",
    "SHOAL_RETRY_INITIAL": "0.2",
    "SHOAL_RETRY_MAX": "1",
    "SHOAL_LOG_LEVEL": "info",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Shoal:
    """One test's shoal installation: a server, agents, and the CLI pointed at them."""

    workdir: Path
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, **FAST_ENV, "SHOAL_URL": self.url, **extra}

    def _spawn(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [*SHOAL, *args],
                env=self.env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def start_server(self) -> None:
        self._spawn(
            "server",
            ["server", "--data-dir", str(self.workdir / "data"), "--port", str(self.port)],
        )
        wait_for(
            lambda: self.cli("stats", "-o", "json", check=False).returncode == 0,
            timeout=30,
            what="shoal server to answer",
            on_fail=lambda: self.log("server"),
        )

    def start_agent(self, name: str, labels: str, token: str) -> subprocess.Popen[bytes]:
        return self._spawn(
            name,
            [
                "agent",
                "--token", token,
                "--name", name,
                "--labels", labels,
                "--backend", "simulated",
                "--state-dir", str(self.workdir / "agents" / name),
            ],
        )  # fmt: skip

    def stop(self, name: str, *, kill: bool = False) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in [n for n in self.procs if n != "server"]:
            self.stop(name)
        if "server" in self.procs:
            self.stop("server")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*SHOAL, *args],
            check=False,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.workdir,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} failed: {result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def token(self) -> str:
        return self.cli("token", "create").stdout.strip()

    def clusters(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.json("clusters")}

    def bundles(self) -> dict[str, dict[str, Any]]:
        return {b["name"]: b for b in self.json("status")}


def wait_for(
    check: Callable[[], T],
    *,
    timeout: float = 60,
    what: str = "condition",
    on_fail: Callable[[], str] | None = None,
) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    detail = on_fail() if on_fail else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last={last!r}\n{detail}")
