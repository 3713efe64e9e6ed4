"""Gitrepos: git repositories polled by the control plane, their commits deployed as bundles.

Specs live in the ``shoal-gitrepos`` bucket and may be written through any
replica's admin API; every replica follows them (and the status bucket) so
any replica can answer ``shoal gitrepo list``. Only the leader (the replica
holding the ``leader`` lease, which also publishes desired state) polls: a
scheduler starts a poll when a gitrepo's interval has passed, when its spec
changed, or when a webhook or another replica asks (``shoal.v1.internal.gitpoll``).

A poll asks the remote which commit the branch (tag, ``HEAD``) points at.
A new commit, or a changed spec, is checked out and built into bundles; if
every bundle is valid they are applied together and the gitrepo's bundles the
commit no longer has are deleted. A commit that fails leaves the deployed one
in place and its error (file and cause) in the status, and is not retried
until the branch moves or the spec changes. An unreachable remote is an error
too, retried at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, KeyValueError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from bundles.charts import ChartCache
from controlplane.errors import BundleInvalid, NotFound, RequestRejected
from controlplane.fleet import Fleet
from controlplane.gitdeploy import BuiltCommit, Deployer, build_commit
from controlplane.gitsync import GitError, GitSource
from controlplane.settings import ServerSettings
from controlplane.streams import GitStores
from controlplane.watch import BucketFollower
from protocol import admin, codec, subjects
from protocol.errors import DecodeError
from protocol.gitrepos import GitCredentials, GitRepoSpec, GitRepoStatus, validate_secret_name
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
        self._fleet = fleet
        self._deployer = deployer
        self._git = git
        self._settings = settings
        self.repos: dict[str, StoredGitRepo] = {}
        self.statuses: dict[str, GitRepoStatus] = {}
        self.leader = False
        self._due: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.git_max_concurrent_polls)
        self._charts = ChartCache(settings.git_cache_path / "charts")

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
            self.statuses = await self._read_statuses()
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
            await self._credentials(spec)  # refuse a secret that does not exist
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

    async def set_secret(self, name: str, credentials: GitCredentials) -> None:
        validate_secret_name(name)
        await self._stores.secrets.put(name, credentials.model_dump_json().encode())
        log.info("gitrepo.secret.set", secret=name, kind=credentials.kind)
        users = [r for r, s in self.repos.items() if s.spec.auth_secret == name]
        await self.request_poll(users)  # new credentials may fix a failing poll

    async def delete_secret(self, name: str) -> None:
        users = sorted(r for r, s in self.repos.items() if s.spec.auth_secret == name)
        if users:
            raise RequestRejected(f"git secret {name!r} is used by gitrepo {', '.join(users)}")
        try:
            await self._stores.secrets.get(name)
        except KeyNotFoundError:
            raise NotFound(f"no git secret named {name!r}") from None
        await self._stores.secrets.delete(name)
        log.info("gitrepo.secret.deleted", secret=name)

    async def list_secrets(self) -> admin.GitSecretListReply:
        try:
            keys = sorted(await self._stores.secrets.keys())
        except NoKeysError:
            keys = []
        out = []
        for key in keys:
            try:
                entry = await self._stores.secrets.get(key)
            except KeyNotFoundError:
                continue
            credentials = GitCredentials.model_validate_json(entry.value or b"{}")
            users = sorted(r for r, s in self.repos.items() if s.spec.auth_secret == key)
            out.append(
                admin.GitSecretInfo(
                    name=key,
                    kind=credentials.kind,
                    username=credentials.username,
                    used_by=tuple(users),
                )
            )
        return admin.GitSecretListReply(secrets=tuple(out))

    async def _credentials(self, spec: GitRepoSpec) -> GitCredentials | None:
        if not spec.auth_secret:
            return None
        try:
            entry = await self._stores.secrets.get(spec.auth_secret)
        except KeyNotFoundError:
            raise NotFound(
                f"no git secret named {spec.auth_secret!r}; create it with "
                f"`shoal gitrepo secret set {spec.auth_secret} ...`"
            ) from None
        return GitCredentials.model_validate_json(entry.value or b"{}")

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
            if stored is not None:
                await self._poll(name, stored)

    async def _poll(self, name: str, stored: StoredGitRepo) -> None:
        spec, generation = stored.spec, stored.generation
        bound = log.bind(gitrepo=name)
        status = self.statuses.get(name, GitRepoStatus()).model_copy(
            update={"last_poll_at": time.time(), "observed_generation": generation}
        )
        try:
            credentials = await self._credentials(spec)
            commit = await self._git.resolve(
                spec.repo, branch=spec.branch, revision=spec.revision, credentials=credentials
            )
        except (GitError, NotFound) as exc:
            if status.error != str(exc):
                bound.warning("gitrepo.poll.failed", error=str(exc))
            failed = {"error": str(exc), "error_commit": "", "error_generation": generation}
            await self._save(name, status.model_copy(update=failed))
            return
        status = status.model_copy(update={"commit": commit})
        if (
            commit == status.deployed_commit
            and generation == status.deployed_generation
            and all(b in self._fleet.bundles for b in status.bundles)
        ):
            cleared = {"error": "", "error_commit": "", "error_generation": 0}
            await self._save(name, status.model_copy(update=cleared))
            return
        if commit == status.error_commit and generation == status.error_generation:
            await self._save(name, status)  # a commit that failed: wait for the next one
            return
        bound = bound.bind(commit=commit[:12])
        owned = tuple(dict.fromkeys((*status.bundles, *status.applying)))
        try:
            built = await self._build(name, spec, commit, credentials)
            self._check_owners(name, built, owned)
        except GitError as exc:  # the fetch failed: retried at the next interval
            bound.warning("gitrepo.fetch.failed", error=str(exc))
            failed = {"error": str(exc), "error_commit": "", "error_generation": generation}
            await self._save(name, status.model_copy(update=failed))
            return
        except BundleInvalid as exc:
            await self._reject(name, status, commit, generation, exc)
            return
        current = self.repos.get(name)
        if current is None or current.generation != generation:
            return  # deleted or changed meanwhile: the next poll deals with it
        await self._save(name, status.model_copy(update={"applying": tuple(built.names)}))
        try:
            gone = await self._deployer.deploy(built, previous=owned)
        except RequestRejected as exc:
            await self._reject(name, status, commit, generation, exc)
            return
        except Exception as exc:  # the bus: the previous version was restored; retry later
            bound.warning("gitrepo.deploy.failed", error=repr(exc))
            failed = {"error": f"deploying failed: {exc}", "error_commit": ""}
            await self._save(name, status.model_copy(update=failed))
            return
        deployed = status.model_copy(
            update={
                "deployed_commit": commit,
                "deployed_generation": generation,
                "deployed_at": time.time(),
                "bundles": tuple(built.names),
                "applying": (),
                "error": "",
                "error_commit": "",
                "error_generation": 0,
                "warnings": tuple(built.warnings),
            }
        )
        await self._save(name, deployed)
        bound.info("gitrepo.deployed", bundles=built.names, deleted=gone)
        if name not in self.repos:  # deleted while we deployed: undo
            await self._deployer.delete(built.names)
            await self._stores.status.delete(name)
            self.statuses.pop(name, None)

    async def _reject(
        self,
        name: str,
        status: GitRepoStatus,
        commit: str,
        generation: int,
        exc: Exception,
    ) -> None:
        """The commit cannot be deployed: keep what runs, record why, wait for the next."""
        log.warning("gitrepo.commit.rejected", gitrepo=name, commit=commit[:12], error=str(exc))
        failed = {
            "error": str(exc),
            "error_commit": commit,
            "error_generation": generation,
            "applying": (),
        }
        await self._save(name, status.model_copy(update=failed))

    async def _build(
        self, name: str, spec: GitRepoSpec, commit: str, credentials: GitCredentials | None
    ) -> BuiltCommit:
        checkouts = self._settings.git_cache_path / "checkouts"
        checkouts.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=checkouts, prefix=f"{name}-") as tmp:
            root = Path(tmp)
            await self._git.checkout(
                spec.repo, commit, root, cache_key=name, credentials=credentials
            )
            return await asyncio.to_thread(build_commit, root, spec, commit, charts=self._charts)

    def _check_owners(self, name: str, built: BuiltCommit, owned: Iterable[str]) -> None:
        mine = set(owned)
        others = {
            bundle: other
            for other, status in self.statuses.items()
            if other != name
            for bundle in (*status.bundles, *status.applying)
        }
        for bundle in built.names:
            if bundle in others:
                raise BundleInvalid(
                    f"bundle {bundle!r} belongs to gitrepo {others[bundle]!r}; "
                    "two gitrepos cannot deploy the same bundle name"
                )
            if bundle in self._fleet.bundles and bundle not in mine:
                raise BundleInvalid(
                    f"bundle {bundle!r} exists already and was not created by this gitrepo "
                    f"(`shoal delete bundle {bundle}` to let the gitrepo take it over)"
                )

    async def _save(self, name: str, status: GitRepoStatus) -> None:
        if name not in self.repos:
            return  # deleted while we polled
        self.statuses[name] = status
        await self._stores.status.put(name, status.model_dump_json().encode())
