"""One poll of one gitrepo: which commit the remote shows, and deploying it if it is new.

The remote's commit is resolved (``git ls-remote``); if it is deployed
already with the current spec, the poll only records when it looked. A new
commit (or a changed spec) is checked out into a temporary directory, built
into bundles and, if every bundle is valid and no bundle name belongs to
someone else, deployed all together by the :class:`~controlplane.gitdeploy.Deployer`.
Every outcome ends in the gitrepo's status: the deployed commit, or the error
with the file and cause. A commit that was rejected is not built again until
the branch moves or the spec changes; an unreachable remote or a failed fetch
is retried at the next interval.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

import structlog

from bundles.charts import ChartCache
from controlplane.errors import BundleInvalid, NotFound, RequestRejected
from controlplane.fleet import Fleet
from controlplane.gitdeploy import BuiltCommit, Deployer, build_commit
from controlplane.gitsecrets import GitSecrets
from controlplane.gitsync import GitError, GitSource
from protocol.gitrepos import GitCredentials, GitRepoSpec, GitRepoStatus

log = structlog.get_logger(__name__)

Save = Callable[[str, GitRepoStatus], Awaitable[None]]


class Poller:
    def __init__(
        self,
        *,
        git: GitSource,
        deployer: Deployer,
        fleet: Fleet,
        secrets: GitSecrets,
        checkouts: Path,
        save: Save,
    ) -> None:
        self._git = git
        self._deployer = deployer
        self._fleet = fleet
        self._secrets = secrets
        self._checkouts = checkouts
        self._save = save
        self._charts = ChartCache(checkouts.parent / "charts")

    async def poll(
        self,
        name: str,
        spec: GitRepoSpec,
        generation: int,
        status: GitRepoStatus,
        *,
        others: Mapping[str, str],
        current: Callable[[], int | None],
    ) -> list[str] | None:
        """Poll once; returns the bundles deployed, if a commit was.

        ``others`` maps bundle names other gitrepos own to them; ``current``
        gives the gitrepo's generation now (``None``: deleted), checked before
        deploying so a deleted or changed gitrepo is not deployed from an old spec.
        """
        bound = log.bind(gitrepo=name)
        status = status.model_copy(
            update={"last_poll_at": time.time(), "observed_generation": generation}
        )
        try:
            credentials = await self._secrets.get(spec.auth_secret) if spec.auth_secret else None
            commit = await self._git.resolve(
                spec.repo, branch=spec.branch, revision=spec.revision, credentials=credentials
            )
        except (GitError, NotFound) as exc:
            if status.error != str(exc):
                bound.warning("gitrepo.poll.failed", error=str(exc))
            failed = {"error": str(exc), "error_commit": "", "error_generation": generation}
            await self._save(name, status.model_copy(update=failed))
            return None
        status = status.model_copy(update={"commit": commit})
        if (
            commit == status.deployed_commit
            and generation == status.deployed_generation
            and all(b in self._fleet.bundles for b in status.bundles)
        ):
            cleared = {"error": "", "error_commit": "", "error_generation": 0}
            await self._save(name, status.model_copy(update=cleared))
            return None
        if commit == status.error_commit and generation == status.error_generation:
            await self._save(name, status)  # a commit that failed: wait for the next one
            return None
        bound = bound.bind(commit=commit[:12])
        owned = tuple(dict.fromkeys((*status.bundles, *status.applying)))
        try:
            built = await self._build(name, spec, commit, credentials)
            self._check_owners(built, owned, others)
        except GitError as exc:  # the fetch failed: retried at the next interval
            bound.warning("gitrepo.fetch.failed", error=str(exc))
            failed = {"error": str(exc), "error_commit": "", "error_generation": generation}
            await self._save(name, status.model_copy(update=failed))
            return None
        except BundleInvalid as exc:
            await self._reject(name, status, commit, generation, exc)
            return None
        if current() != generation:
            return None  # deleted or changed meanwhile: the next poll deals with it
        await self._save(name, status.model_copy(update={"applying": tuple(built.names)}))
        try:
            gone = await self._deployer.deploy(built, previous=owned)
        except RequestRejected as exc:
            await self._reject(name, status, commit, generation, exc)
            return None
        except Exception as exc:  # the bus: the previous version was restored; retry later
            bound.warning("gitrepo.deploy.failed", error=repr(exc))
            failed = {"error": f"deploying failed: {exc}", "error_commit": "", "applying": ()}
            await self._save(name, status.model_copy(update=failed))
            return None
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
        return built.names

    async def _reject(
        self, name: str, status: GitRepoStatus, commit: str, generation: int, exc: Exception
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
        with tempfile.TemporaryDirectory(dir=_made(self._checkouts), prefix=f"{name}-") as tmp:
            root = Path(tmp)
            await self._git.checkout(
                spec.repo, commit, root, cache_key=name, credentials=credentials
            )
            return await asyncio.to_thread(build_commit, root, spec, commit, charts=self._charts)

    def _check_owners(
        self, built: BuiltCommit, owned: Iterable[str], others: Mapping[str, str]
    ) -> None:
        mine = set(owned)
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


def _made(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory
