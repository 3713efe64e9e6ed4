"""One commit of a gitrepo becomes bundles, deployed all together or not at all.

:func:`build_commit` turns a checked-out commit into bundles with
:mod:`bundles.build` (their specs labelled with the gitrepo and commit, their
resources encoded as the blobs ``shoal apply`` uploads), every one valid
before anything is deployed. :class:`Deployer` then does what ``shoal
apply`` does for each bundle (blob into the object store under its manifest
ID, then :meth:`Fleet.apply_bundle`) and deletes the gitrepo's bundles the
commit no longer has. If any apply fails, the bundles applied before it are
put back to what they were, so a commit is deployed whole or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from nats.js.errors import ObjectNotFoundError
from nats.js.object_store import ObjectStore

from bundles.build import build_bundles
from bundles.charts import ChartCache
from bundles.errors import BundleError
from controlplane.errors import BundleInvalid
from controlplane.fleet import Fleet
from controlplane.targeting import BundleRecord
from protocol import admin, codec, ids
from protocol.gitrepos import COMMIT_LABEL, REPO_LABEL, GitRepoSpec
from protocol.models import BundleSpec

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PreparedBundle:
    spec: BundleSpec
    blob: bytes
    manifest_id: str


@dataclass(frozen=True)
class BuiltCommit:
    commit: str
    bundles: list[PreparedBundle]
    warnings: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [b.spec.name for b in self.bundles]


def build_commit(root: Path, repo: GitRepoSpec, commit: str, *, charts: ChartCache) -> BuiltCommit:
    """Every bundle of the commit checked out at ``root``, or :class:`BundleInvalid`.

    :func:`bundles.build.build_bundles` finds the bundles as Fleet does (each
    path, each directory with a ``fleet.yaml``), fetches remote charts into
    them and renders every variant once; the error of any bundle (naming the
    file and cause) rejects the whole commit. Blocking (files, Helm): run it
    in a thread.
    """
    try:
        result = build_bundles(
            root, base_name=repo.name, paths=repo.paths, targets=repo.targets, cache=charts
        )
    except BundleError as exc:
        raise BundleInvalid(str(exc)) from exc
    prepared: list[PreparedBundle] = []
    for bundle in result.bundles:
        blob = codec.encode_resources(bundle.resources)
        prepared.append(
            PreparedBundle(
                spec=_labelled(bundle.spec, repo.name, commit),
                blob=blob,
                manifest_id=ids.manifest_id_of_blob(blob),
            )
        )
    return BuiltCommit(commit=commit, bundles=prepared, warnings=list(result.warnings))


def _labelled(spec: BundleSpec, repo_name: str, commit: str) -> BundleSpec:
    labels = {**spec.labels, REPO_LABEL: repo_name, COMMIT_LABEL: commit}
    return spec.model_copy(update={"labels": labels})


# -- deploying ---------------------------------------------------------------


class Deployer:
    """Applies a built commit as ``shoal apply`` would, all bundles or none."""

    def __init__(self, fleet: Fleet, blobs: ObjectStore) -> None:
        self._fleet = fleet
        self._blobs = blobs

    async def deploy(self, built: BuiltCommit, *, previous: Sequence[str]) -> list[str]:
        """Apply every bundle, then delete ``previous`` ones the commit lacks; returns those."""
        for bundle in built.bundles:
            await self._upload(bundle)
        before: dict[str, BundleRecord | None] = {
            b.spec.name: self._fleet.bundles.get(b.spec.name) for b in built.bundles
        }
        applied: list[str] = []
        try:
            for bundle in built.bundles:
                reply = await self._fleet.apply_bundle(
                    admin.BundleApply(spec=bundle.spec, manifest_id=bundle.manifest_id)
                )
                applied.append(bundle.spec.name)
                log.info(
                    "gitrepo.bundle.applied",
                    bundle=reply.name,
                    changed=reply.changed,
                    deployment_ids=list(reply.deployment_ids),
                )
        except Exception:
            await self._restore(applied, before)
            raise
        gone = [name for name in previous if name not in set(built.names)]
        for name in gone:
            if name in self._fleet.bundles:
                await self._fleet.delete_bundle(name)
        return gone

    async def delete(self, names: Sequence[str]) -> list[str]:
        deleted = []
        for name in names:
            if name in self._fleet.bundles:
                await self._fleet.delete_bundle(name)
                deleted.append(name)
        return deleted

    async def _upload(self, bundle: PreparedBundle) -> None:
        try:
            await self._blobs.get_info(bundle.manifest_id)
        except ObjectNotFoundError:
            await self._blobs.put(bundle.manifest_id, bundle.blob)

    async def _restore(self, applied: list[str], before: dict[str, BundleRecord | None]) -> None:
        """Put bundles applied from a commit that failed half-way back as they were."""
        for name in reversed(applied):
            old = before.get(name)
            try:
                if old is None:
                    await self._fleet.delete_bundle(name)
                else:
                    await self._fleet.apply_bundle(
                        admin.BundleApply(spec=old.spec, manifest_id=old.manifest_id)
                    )
            except Exception as exc:  # keep restoring the others
                log.error("gitrepo.restore.failed", bundle=name, error=repr(exc))
