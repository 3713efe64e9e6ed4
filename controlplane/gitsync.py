"""The git adapter: resolve a ref and check out a commit, with the ``git`` command line.

Git is spoken through the installed ``git`` binary (no Python git library):
``git ls-remote`` finds the commit a branch, tag or ``HEAD`` points at, then a
shallow ``git fetch --depth 1`` of that one commit into a bare cache
repository per gitrepo, then ``read-tree`` + ``checkout-index`` into an empty
directory for the bundle builder. Symlinks are checked out as plain files, so
a repository cannot make the builder read files of the control plane's host.

Every command runs with a clean environment: no user or system git config,
no terminal prompts, only the https/http/ssh/git transports, a time limit
(the whole process group is killed past it). Credentials never reach a
command line: HTTPS passwords are handed over by a ``GIT_ASKPASS`` helper
reading 0600 files, SSH keys through ``GIT_SSH_COMMAND -i`` on a 0600 file;
both live in a private temporary directory removed after the command.
Failures are :class:`GitError` with git's own message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from controlplane.errors import ControlPlaneError
from protocol.gitrepos import GitCredentials, is_commit

ALLOWED_PROTOCOLS = "https:http:ssh:git"
MAX_ERROR_CHARS = 600
# git's askpass prompt starts with "Username for ..." or "Password for ...".
ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  Username*|username*) exec cat "$SHOAL_GIT_USERNAME_FILE" ;;
  *) exec cat "$SHOAL_GIT_PASSWORD_FILE" ;;
esac
"""


class GitError(ControlPlaneError):
    """A git command failed; ``command`` is the git subcommand, the message git's reason."""

    def __init__(self, message: str, *, command: str) -> None:
        super().__init__(message)
        self.command = command


class GitSource(Protocol):
    """What the gitrepo poller needs of git; tests may pass another implementation."""

    async def resolve(
        self, url: str, *, branch: str, revision: str, credentials: GitCredentials | None
    ) -> str:
        """The commit ``branch``, ``revision`` (tag or commit) or else ``HEAD`` points at."""
        ...

    async def checkout(
        self,
        url: str,
        commit: str,
        dest: Path,
        *,
        cache_key: str,
        credentials: GitCredentials | None,
    ) -> None:
        """Write the tree of ``commit`` into the empty directory ``dest``."""
        ...

    def forget(self, cache_key: str) -> None:
        """Drop the cache of a gitrepo that was deleted."""
        ...


class GitCli:
    """:class:`GitSource` over the ``git`` binary, caching repositories under ``cache_dir``."""

    def __init__(self, cache_dir: Path, *, timeout: float, git: str = "git") -> None:
        self.cache_dir = cache_dir
        self._timeout = timeout
        self._git = git

    # -- GitSource -----------------------------------------------------------

    async def resolve(
        self, url: str, *, branch: str, revision: str, credentials: GitCredentials | None
    ) -> str:
        if revision and is_commit(revision):
            return revision  # fetched by ID; a missing commit fails the fetch
        if branch:
            patterns = [f"refs/heads/{branch}"]
        elif revision:
            patterns = [f"refs/tags/{revision}", f"refs/tags/{revision}^{{}}"]
        else:
            patterns = ["HEAD"]
        out = await self.run(["ls-remote", "--", url, *patterns], credentials=credentials)
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            refs[ref.strip()] = sha.strip()
        for pattern in reversed(patterns):  # a peeled tag (^{}) names the commit
            if pattern in refs:
                return refs[pattern]
        what = f"branch {branch!r}" if branch else f"tag {revision!r}" if revision else "HEAD"
        raise GitError(f"{url} has no {what}", command="ls-remote")

    async def checkout(
        self,
        url: str,
        commit: str,
        dest: Path,
        *,
        cache_key: str,
        credentials: GitCredentials | None,
    ) -> None:
        repo = self._repo_dir(cache_key, url)
        if not _prepare(repo, dest):
            await self.run(["init", "--quiet", "--bare", str(repo)])
        git_dir = f"--git-dir={repo}"
        if not await self._has_commit(git_dir, commit):
            await self.run(
                [git_dir, "fetch", "--quiet", "--depth=1", "--no-tags", "--", url, commit],
                credentials=credentials,
            )
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            await self.run([git_dir, "read-tree", commit], env=env)
            no_links = ["-c", "core.symlinks=false"]  # a link is checked out as a plain file
            await self.run(
                [git_dir, f"--work-tree={dest}", *no_links, "checkout-index", "--all", "--force"],
                env=env,
            )

    def forget(self, cache_key: str) -> None:
        for path in self.cache_dir.glob(f"{cache_key}--*.git"):
            shutil.rmtree(path, ignore_errors=True)

    # -- running git ---------------------------------------------------------

    def _repo_dir(self, cache_key: str, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        return self.cache_dir / f"{cache_key}--{digest}.git"

    async def _has_commit(self, git_dir: str, commit: str) -> bool:
        try:
            await self.run([git_dir, "cat-file", "-e", f"{commit}^{{commit}}"])
        except GitError:
            return False
        return True

    def _base_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.cache_dir),
            "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,
            "GIT_SSH_COMMAND": "ssh -F /dev/null -o BatchMode=yes",
        }

    async def run(
        self,
        args: list[str],
        *,
        credentials: GitCredentials | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Run ``git ARGS``; stdout on success, :class:`GitError` with git's reason otherwise."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        command = _subcommand(args)
        with self._auth_env(credentials) as auth:
            full_env = {**self._base_env(), **auth, **(env or {})}
            try:
                proc = await asyncio.create_subprocess_exec(
                    self._git,
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=full_env,
                    start_new_session=True,  # its own process group: a timeout kills ssh too
                )
            except OSError as exc:
                raise GitError(f"cannot run git: {exc}", command=command) from exc
            try:
                out, err = await asyncio.wait_for(proc.communicate(), self._timeout)
            except BaseException as exc:  # a timeout or a cancellation: leave nothing running
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                if isinstance(exc, TimeoutError):
                    raise GitError(
                        f"git {command} did not finish within {self._timeout:g} s",
                        command=command,
                    ) from exc
                raise
        if proc.returncode != 0:
            raise GitError(_reason(err.decode(errors="replace"), command), command=command)
        return out.decode(errors="replace")

    @contextlib.contextmanager
    def _auth_env(self, credentials: GitCredentials | None) -> Iterator[dict[str, str]]:
        """Environment handing ``credentials`` to git through private files, removed after."""
        if credentials is None:
            yield {}
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="auth-", dir=self.cache_dir))  # mode 0700
        try:
            yield _write_auth(tmp, credentials, self.cache_dir / "known_hosts")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _prepare(repo: Path, dest: Path) -> bool:
    """Create the cache and checkout directories; whether the cache repository exists."""
    dest.mkdir(parents=True, exist_ok=True)
    repo.mkdir(parents=True, exist_ok=True)
    return (repo / "HEAD").exists()


def _subcommand(args: list[str]) -> str:
    """The git subcommand in ``args`` (skipping global options and ``-c`` values)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "-c":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return "git"


def _private_file(path: Path, content: str, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    return path


def _write_auth(tmp: Path, credentials: GitCredentials, learned_hosts: Path) -> dict[str, str]:
    if credentials.ssh_private_key:
        key = credentials.ssh_private_key
        key_file = _private_file(tmp / "id", key if key.endswith("\n") else key + "\n")
        if credentials.known_hosts:
            hosts, checking = _private_file(tmp / "known_hosts", credentials.known_hosts), "yes"
        else:  # trust on first use, remembered across polls
            hosts, checking = learned_hosts, "accept-new"
        ssh = [
            "ssh", "-F", "/dev/null", "-i", str(key_file), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={hosts}",
            "-o", f"StrictHostKeyChecking={checking}",
        ]  # fmt: skip
        return {"GIT_SSH_COMMAND": shlex.join(ssh)}
    askpass = _private_file(tmp / "askpass", ASKPASS_SCRIPT, mode=0o700)
    return {
        "GIT_ASKPASS": str(askpass),
        "SHOAL_GIT_USERNAME_FILE": str(_private_file(tmp / "username", credentials.username)),
        "SHOAL_GIT_PASSWORD_FILE": str(_private_file(tmp / "password", credentials.password)),
    }


def _reason(stderr: str, command: str) -> str:
    """git's own explanation, without its prefixes and hints, in one bounded line."""
    lines = [
        line.strip().removeprefix("fatal: ").removeprefix("error: ")
        for line in stderr.splitlines()
        if line.strip() and not line.startswith("hint:")
    ]
    text = "; ".join(lines) or f"git {command} failed"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."
