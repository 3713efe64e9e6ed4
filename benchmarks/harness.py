"""What every scenario shares: a real nats-server, the control plane as a child process, results.

The control plane runs as its own ``shoal server --nats-url URL`` process so
that its memory (``VmRSS`` in ``/proc/<pid>/status``) and CPU time (utime +
stime in ``/proc/<pid>/stat``) are its own and not mixed with the simulated
fleet's, which runs in the harness process. No psutil: ``/proc`` is enough on
Linux, the only platform the targets are stated for.

Every wait here has a deadline, the servers bind 127.0.0.1 on a port the OS
picks, and :class:`Bench` tears the child processes and the temporary
directory down in ``finally``, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from controlplane.embedded import EmbeddedNats
from protocol import admin, codec, ids
from protocol.models import BundleResource, BundleSpec, BundleTarget
from protocol.selectors import LabelSelector, parse_selector
from protocol.states import State
from shoal_cli.client import AdminClient
from shoal_cli.errors import CliError, ControlPlaneTimeout

LOCALHOST = "127.0.0.1"
CP_LOG_LEVEL = "warning"
CP_START_TIMEOUT = 30.0
CP_STOP_TIMEOUT = 10.0
CP_POLL = 0.1
READY_POLL = 0.1
ADMIN_TIMEOUT = 30.0
TOKEN_TTL_SECONDS = 24 * 3600.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Fields of /proc/<pid>/stat after the ")" closing the command name: utime is 14th, stime 15th.
_UTIME_AFTER_COMM = 11
_STIME_AFTER_COMM = 12
KIB = 1024

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
data:
  value: "{value}"
"""


def say(message: str) -> None:
    """Progress for people, on stderr; stdout is kept for the JSON line."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def shoal_executable() -> str:
    return str(Path(sys.executable).parent / "shoal")


def proc_rss_bytes(pid: int) -> int:
    """Resident set size of a process, from ``VmRSS`` in /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[_UTIME_AFTER_COMM]) + int(fields[_STIME_AFTER_COMM])) / CLOCK_TICKS


def machine_facts() -> dict[str, Any]:
    mem_total = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * KIB
    return {
        "cpus": os.cpu_count(),
        "mem_total_bytes": mem_total,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_results(result: dict[str, Any], *, scenario: str, clusters: int, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{scenario}_{clusters}_{stamp}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


def class_labels(classes: int) -> Callable[[int], dict[str, str]]:
    """Labels of simulated cluster ``i``: K classes, plus a label no selector reads."""

    def labels_for(index: int) -> dict[str, str]:
        return {"class": f"c{index % classes}", "shop": f"{index:07d}"}

    return labels_for


def class_selector(classes: int) -> str:
    """A selector naming every class value, so the schema tells the K classes apart."""
    return "class in (" + ",".join(f"c{i}" for i in range(classes)) + ")"


def bundle_blob(name: str, value: str) -> tuple[str, bytes]:
    """(manifest ID, blob) of a one-ConfigMap bundle."""
    resources = [BundleResource(name="cm.yaml", content=CONFIGMAP.format(name=name, value=value))]
    blob = codec.encode_resources(resources)
    return ids.manifest_id_of_blob(blob), blob


async def apply_bundle(
    client: AdminClient, name: str, value: str, *, selector: str | None = None
) -> admin.BundleApplied:
    """Upload the bundle's blob and apply it, as ``shoal apply`` does."""
    manifest, blob = bundle_blob(name, value)
    await client.upload_blob(manifest, blob)
    target = BundleTarget(
        cluster_selector=parse_selector(selector) if selector else LabelSelector()
    )
    spec = BundleSpec(name=name, targets=(target,))
    return await client.admin(
        admin.BundleApply(spec=spec, manifest_id=manifest), admin.BundleApplied
    )


async def stats(client: AdminClient) -> dict[str, int]:
    return dict((await client.admin(admin.Stats(), admin.StatsReply)).counters)


async def ready_count(client: AdminClient, bundle: str) -> int:
    reply = await client.admin(admin.BundleList(), admin.BundleListReply)
    for summary in reply.bundles:
        if summary.name == bundle:
            return summary.states.get(State.READY, 0)
    return 0


async def wait_ready(
    client: AdminClient,
    bundle: str,
    want: int,
    *,
    timeout: float,
    label: str,
    by_second: list[int] | None = None,
) -> tuple[int, float]:
    """Poll the control plane until ``want`` clusters are Ready: (ready, seconds).

    A read the control plane does not answer in time is asked again, until
    ``timeout``: under load it answers late, and the run is not over for that.

    ``by_second``, if given, gets the count the control plane answered last in
    each whole second of the wait (its view, to set beside the bus's).
    """
    started = time.monotonic()
    deadline = started + timeout
    ready = 0
    last_said = started
    while True:
        try:
            ready = await ready_count(client, bundle)
        except ControlPlaneTimeout as exc:  # busy: its answer may come next time
            if time.monotonic() >= deadline:
                break
            say(f"{label}: {exc}; asking again")
            continue
        now = time.monotonic()
        if by_second is not None:
            second = int(now - started)
            by_second.extend([by_second[-1] if by_second else 0] * (second + 1 - len(by_second)))
            by_second[second] = ready
        if ready >= want or now >= deadline:
            break
        if now - last_said >= 1.0:
            say(f"{label}: {ready}/{want} Ready after {now - started:.1f} s")
            last_said = now
        await asyncio.sleep(READY_POLL)
    return ready, time.monotonic() - started


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, timeout: float, poll: float = CP_POLL
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(poll)
    return False


@dataclass
class ControlPlaneProcess:
    """``shoal server --nats-url URL`` as a child process."""

    url: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("control plane process not started")
        return self.proc.pid

    async def start(self) -> None:
        env = {**os.environ, "SHOAL_LOG_LEVEL": CP_LOG_LEVEL, **self.env}
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / "controlplane.log"
        with log_path.open("ab") as log_file:
            self.proc = await asyncio.create_subprocess_exec(
                shoal_executable(),
                "server",
                "--nats-url",
                self.url,
                "--data-dir",
                str(self.workdir / "cp-data"),
                cwd=self.workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "controlplane.log").read_text(errors="replace")[-2000:]
        return ""

    def rss_bytes(self) -> int:
        return proc_rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), CP_STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class Bench:
    """A nats-server and a control-plane process in a temporary directory, torn down on exit."""

    monitor: bool = False
    cp_env: dict[str, str] = field(default_factory=dict)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="shoal-bench-")))
    nats: EmbeddedNats | None = None
    cp: ControlPlaneProcess | None = None
    url: str = ""

    async def __aenter__(self) -> Bench:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def nats_cpu_seconds(self) -> float:
        """CPU seconds the nats-server process has used so far."""
        pid = self.nats.pid if self.nats is not None else None
        return proc_cpu_seconds(pid) if pid is not None else 0.0

    async def _start(self) -> None:
        self.nats = EmbeddedNats(store_dir=self.tmp / "nats", host=LOCALHOST, port=0)
        self.url = await self.nats.start()
        say(f"nats-server at {self.url}")
        self.cp = ControlPlaneProcess(self.url, self.tmp, env=self.cp_env)
        await self.cp.start()

        async def answers() -> bool:
            if self.cp is None or self.cp.proc is None or self.cp.proc.returncode is not None:
                raise RuntimeError(
                    "the control plane exited at start-up; its log says:\n"
                    + (self.cp.log_tail() if self.cp else "")
                )
            try:
                async with AdminClient(self.url, timeout=1.0) as client:
                    await stats(client)
            except CliError:
                return False
            return True

        if not await wait_for(answers, timeout=CP_START_TIMEOUT):
            raise RuntimeError(f"the control plane did not answer within {CP_START_TIMEOUT} s")
        say(f"control plane pid {self.cp.pid} answers")

    async def close(self) -> None:
        try:
            if self.cp is not None:
                await self.cp.stop()
        finally:
            try:
                if self.nats is not None:
                    await self.nats.stop()
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def client(self) -> AdminClient:
        return AdminClient(self.url, timeout=ADMIN_TIMEOUT)

    async def token(self, client: AdminClient) -> str:
        reply = await client.admin(
            admin.TokenCreate(ttl_seconds=TOKEN_TTL_SECONDS, description="benchmark"),
            admin.TokenCreated,
        )
        return reply.token
