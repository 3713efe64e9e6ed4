"""Gitrepos: git repositories polled by the control plane, their commits deployed as bundles.

Specs live in the ``shoal-gitrepos`` bucket and may be written through any
replica's admin API; every replica follows them (and the status bucket) so
any replica can answer ``shoal gitrepo list``. Only the leader (the replica
holding the ``leader`` lease, which also publishes desired state) polls: a
scheduler starts a poll when a gitrepo's interval has passed, when its spec
changed, or when a webhook or another replica asks (``shoal.v1.internal.gitpoll``).

What one poll does is :mod:`controlplane.gitpoll`'s: a new commit becomes
bundles deployed all together, or an error (file and cause) in the status
while the previous commit stays deployed. Credentials are
:mod:`controlplane.gitsecrets`'s; the git command line is
:mod:`controlplane.gitsync`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, KeyValueError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from controlplane.errors import NotFound, RequestRejected
from controlplane.fleet import Fleet
from controlplane.gitdeploy import Deployer
from controlplane.gitpoll import Poller
from controlplane.gitsecrets import GitSecrets
from controlplane.gitsync import GitSource
from controlplane.settings import ServerSettings
from controlplane.streams import GitStores
from controlplane.watch import BucketFollower
from protocol import admin, codec, subjects
from protocol.errors import DecodeError
from protocol.gitrepos import GitRepoSpec, GitRepoStatus
from protocol.states import State

log = structlog.get_logger(__name__)

# The scheduler wakes at least this often, even with nothing due.
IDLE_WAIT = 60.0


class StoredGitRepo(BaseModel):
    """A gitrepo as kept in the ``shoal-gitrepos`` bucket."""

    model_config = ConfigDict(frozen=True)
    spec: GitRepoSpec
    generation: int
    created_at: float
    updated_at: float


class GitRepos:
    def __init__(
        self,
        nc: Client,
        stores: GitStores,
        *,
        fleet: Fleet,
        deployer: Deployer,
        git: GitSource,
        settings: ServerSettings,
    ) -> None:
        self._nc = nc
        self._stores = stores
        self._deployer = deployer
        self._git = git
        self.repos: dict[str, StoredGitRepo] = {}
        self.statuses: dict[str, GitRepoStatus] = {}
        self.leader = False
        self._due: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.git_max_concurrent_polls)
        self.secrets = GitSecrets(stores.secrets, users=self.users_of, on_change=self.request_poll)
        self._poller = Poller(
            git=git,
            deployer=deployer,
            fleet=fleet,
            secrets=self.secrets,
            checkouts=settings.git_cache_path / "checkouts",
            save=self._save,
        )

    # -- lifecycle -----------------------------------------------------------

    async def load(self) -> list[BucketFollower]:
        """Read specs and statuses; returns followers to run for later changes."""
        followers = [
            BucketFollower(self._stores.repos, self._repo_changed, name="gitrepos"),
            BucketFollower(self._stores.status, self._status_changed, name="gitrepo-status"),
        ]
        for follower in followers:
            await follower.load()
        await self._nc.subscribe(subjects.INTERNAL_GITPOLL, cb=self._poll_requested)
        return followers

    async def run(self) -> None:
        """The leader's scheduler: start each gitrepo's poll when it is due (a supervised task)."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = loop.time()
            wait = IDLE_WAIT
            if self.leader:
                for name, stored in list(self.repos.items()):
                    if name in self._running:
                        continue
                    due = self._due.get(name, now)
                    if due <= now:
                        due = self._due[name] = now + stored.spec.polling_interval
                        self._start_poll(name)
                    wait = min(wait, due - now)
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that
            # arrives together with the wake-up (as at shutdown).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._wake.wait()

    async def stop(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    async def set_leader(self, leader: bool) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        if leader:  # a new leader polls everything at once, from the statuses in KV
            statuses = await self._read_statuses()
            self.statuses.clear()
            self.statuses.update(statuses)
            self._due.clear()
        self._wake.set()

    def trigger(self, names: Iterable[str]) -> list[str]:
        """Poll these gitrepos as soon as possible (on the leader); returns the known ones."""
        known = [name for name in names if name in self.repos]
        for name in known:
            self._due[name] = float("-inf")
        self._wake.set()
        return known

    async def request_poll(self, names: Iterable[str]) -> None:
        """Have the leader poll ``names``: here if we lead, else over NATS."""
        wanted = tuple(names)
        if self.leader:
            self.trigger(wanted)
        elif wanted:
            await self._nc.publish(
                subjects.INTERNAL_GITPOLL, codec.encode(admin.GitPoll(names=wanted))
            )

    # -- followers -----------------------------------------------------------

    async def _repo_changed(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.repos.pop(key, None)
            self._due.pop(key, None)
            self._git.forget(key)  # every replica drops its own cache of it
            return
        stored = StoredGitRepo.model_validate_json(value)
        old = self.repos.get(key)
        self.repos[key] = stored
        if old is None or old.generation != stored.generation:
            self.trigger([key])

    async def _status_changed(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.statuses.pop(key, None)
        elif not self.leader:  # the leader is the writer: its memory is ahead of the echo
            self.statuses[key] = GitRepoStatus.model_validate_json(value)

    async def _read_statuses(self) -> dict[str, GitRepoStatus]:
        try:
            keys = await self._stores.status.keys()
        except NoKeysError:
            return {}
        out = {}
        for key in keys:
            with contextlib.suppress(KeyNotFoundError):
                entry = await self._stores.status.get(key)
                out[key] = GitRepoStatus.model_validate_json(entry.value or b"{}")
        return out

    async def _poll_requested(self, msg: Msg) -> None:
        try:
            request = codec.decode(msg.data, admin.GitPoll)
        except DecodeError as exc:
            log.warning("gitrepo.poll_request.malformed", error=str(exc))
            return
        if self.leader:
            self.trigger(request.names)

    # -- admin ---------------------------------------------------------------

    async def set(self, spec: GitRepoSpec) -> admin.GitRepoSetReply:
        if spec.auth_secret:
            await self.secrets.get(spec.auth_secret)  # refuse a secret that does not exist
        try:
            entry: KeyValue.Entry | None = await self._stores.repos.get(spec.name)
        except KeyNotFoundError:
            entry = None
        old = StoredGitRepo.model_validate_json(entry.value or b"") if entry else None
        now = time.time()
        if old is not None and old.spec == spec:
            stored, changed = old, False
        else:
            stored = StoredGitRepo(
                spec=spec,
                generation=(old.generation if old else 0) + 1,
                created_at=old.created_at if old else now,
                updated_at=now,
            )
            data = stored.model_dump_json().encode()
            try:  # compare-and-set, so two concurrent changes never share a generation
                if entry is None:
                    await self._stores.repos.create(spec.name, data)
                else:
                    await self._stores.repos.update(spec.name, data, last=entry.revision)
            except KeyValueError:
                raise RequestRejected(
                    f"gitrepo {spec.name!r} was changed at the same time; try again"
                ) from None
            self.repos[spec.name] = stored
            changed = True
        log.info("gitrepo.set", gitrepo=spec.name, generation=stored.generation, changed=changed)
        await self.request_poll([spec.name])
        return admin.GitRepoSetReply(
            name=spec.name, generation=stored.generation, created=old is None, changed=changed
        )

    async def delete(self, name: str) -> admin.GitRepoDeleted:
        if name not in self.repos:
            raise NotFound(f"no gitrepo named {name!r}")
        await self._stores.repos.delete(name)
        self.repos.pop(name, None)
        async with self._lock(name):  # lets a poll of ours finish first
            status = self.statuses.pop(name, GitRepoStatus())
            deleted = await self._deployer.delete([*status.bundles, *status.applying])
            await self._stores.status.delete(name)
        log.info("gitrepo.deleted", gitrepo=name, bundles=deleted)
        return admin.GitRepoDeleted(name=name, bundles=tuple(deleted))

    def infos(
        self, name: str, summaries: Mapping[str, admin.BundleSummary]
    ) -> admin.GitRepoListReply:
        if name and name not in self.repos:
            raise NotFound(f"no gitrepo named {name!r}; `shoal gitrepo list` shows them all")
        out = []
        for repo_name in [name] if name else sorted(self.repos):
            stored = self.repos[repo_name]
            status = self.statuses.get(repo_name, GitRepoStatus())
            bundles = []
            for bundle in status.bundles:
                summary = summaries.get(bundle)
                if summary is None:
                    bundles.append(admin.GitRepoBundle(name=bundle))
                    continue
                bundles.append(
                    admin.GitRepoBundle(
                        name=bundle,
                        deployment_id=summary.deployment_id,
                        targeted=summary.targeted,
                        ready=summary.states.get(State.READY, 0),
                        states=summary.states,
                    )
                )
            out.append(
                admin.GitRepoInfo(
                    spec=stored.spec,
                    generation=stored.generation,
                    status=status,
                    bundles=tuple(bundles),
                    created_at=stored.created_at,
                )
            )
        return admin.GitRepoListReply(repos=tuple(out))

    def users_of(self, secret: str) -> list[str]:
        return sorted(r for r, s in self.repos.items() if s.spec.auth_secret == secret)

    # -- polling -------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _start_poll(self, name: str) -> None:
        task = asyncio.create_task(self._guarded_poll(name), name=f"gitrepo:{name}")
        self._running[name] = task

        def done(_: asyncio.Task[None]) -> None:
            self._running.pop(name, None)
            self._wake.set()

        task.add_done_callback(done)

    async def _guarded_poll(self, name: str) -> None:
        async with self._slots:
            try:
                await self.poll(name)
            except Exception:  # a bug or a bus failure: logged, retried at the next interval
                log.exception("gitrepo.poll.crashed", gitrepo=name)

    async def poll(self, name: str) -> None:
        """Look at the remote once and deploy what changed."""
        async with self._lock(name):
            stored = self.repos.get(name)
            if stored is None:
                return
            others = {
                bundle: other
                for other, status in self.statuses.items()
                if other != name
                for bundle in (*status.bundles, *status.applying)
            }
            deployed = await self._poller.poll(
                name,
                stored.spec,
                stored.generation,
                self.statuses.get(name, GitRepoStatus()),
                others=others,
                current=lambda: r.generation if (r := self.repos.get(name)) else None,
            )
            if deployed is not None and name not in self.repos:  # deleted meanwhile: undo
                await self._deployer.delete(deployed)
                await self._stores.status.delete(name)
                self.statuses.pop(name, None)

    async def _save(self, name: str, status: GitRepoStatus) -> None:
        if name not in self.repos:
            return  # deleted while we polled
        self.statuses[name] = status
        await self._stores.status.put(name, status.model_dump_json().encode())
