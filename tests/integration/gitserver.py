"""Git servers for tests: ``git daemon`` (git://) and git's smart HTTP behind basic auth.

Both serve bare repositories under one directory on 127.0.0.1; a
:class:`WorkTree` is a clone the test writes files in, commits and pushes,
as a developer would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from aiohttp import web

# Tests' own git commands: no user or system configuration, a fixed identity.
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WorkTree:
    """A clone of a served repository, on branch ``main``, that pushes to it."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url

    def write(self, rel: str, content: str) -> WorkTree:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        return self

    def remove(self, rel: str) -> WorkTree:
        target = self.path / rel
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        return self

    def push(self, message: str = "change", *, branch: str = "main") -> str:
        """Commit everything and push; returns the new commit ID."""
        git("add", "--all", ".", cwd=self.path)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.path)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=self.path)
        return git("rev-parse", "HEAD", cwd=self.path)


class GitDaemon:
    """``git daemon`` on 127.0.0.1, serving (and accepting pushes to) ``base/*.git``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                "git", "daemon", "--export-all", "--reuseaddr", "--informative-errors",
                f"--base-path={self.base}", "--listen=127.0.0.1", f"--port={self.port}",
                "--enable=receive-pack", str(self.base),
            ],
            env={**os.environ, **GIT_ENV},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"git daemon did not listen on port {self.port}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def create(self, name: str, work: Path) -> WorkTree:
        """A new bare repository ``name`` and a work tree cloned from it."""
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.base / f"{name}.git"))
        git("init", "--quiet", "--initial-branch=main", str(work))
        git("remote", "add", "origin", self.url(name), cwd=work)
        return WorkTree(work, self.url(name))


class GitHttp:
    """Git's smart HTTP (``git http-backend``) on 127.0.0.1, behind HTTP basic auth."""

    def __init__(self, base: Path, *, username: str, password: str) -> None:
        self.base = base
        self._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.requests: list[str] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != self._auth:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        body = await request.read()
        env = {
            **os.environ,
            **GIT_ENV,
            "GIT_PROJECT_ROOT": str(self.base),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "test",
            "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
        }
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate(body)
        head, _, payload = out.partition(b"\r\n\r\n")
        response = web.Response(body=payload)
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                response.set_status(int(value.split()[0]))
            elif key:
                response.headers[key] = value.strip()
        return response
