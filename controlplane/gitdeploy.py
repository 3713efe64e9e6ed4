"""One commit of a gitrepo becomes bundles, deployed all together or not at all.

:func:`build_commit` turns a checked-out commit into bundles (their specs
labelled with the gitrepo and commit, their resources encoded as the blobs
``shoal apply`` uploads) and validates every one before anything is
deployed. :class:`Deployer` then does what ``shoal apply`` does for each
bundle (blob into the object store under its manifest ID, then
:meth:`Fleet.apply_bundle`) and deletes the gitrepo's bundles the commit no
longer has. If any apply fails, the bundles applied before it are put back
to what they were, so a commit is deployed whole or not at all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from nats.js.errors import ObjectNotFoundError
from nats.js.object_store import ObjectStore

from controlplane import sources
from controlplane.errors import BundleInvalid
from controlplane.fleet import Fleet
from controlplane.targeting import BundleRecord
from protocol import admin, codec, ids
from protocol.gitrepos import COMMIT_LABEL, REPO_LABEL, GitRepoSpec
from protocol.manifests import MANIFEST_SUFFIXES
from protocol.models import BundleResource, BundleSpec, BundleTarget, DeploymentOptions
from protocol.selectors import LabelSelector

log = structlog.get_logger(__name__)

FLEET_YAML = ("fleet.yaml", "fleet.yml")
# A gitrepo without targets deploys everywhere, as `shoal apply` without --target.
EVERY_CLUSTER = (BundleTarget(name="all", cluster_selector=LabelSelector()),)


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


def build_commit(root: Path, repo: GitRepoSpec, commit: str) -> BuiltCommit:
    """Every bundle of the commit checked out at ``root``, or :class:`BundleInvalid`.

    The message of the error names the file and the cause. Blocking (reads
    files): run it in a thread.
    """
    built, warnings = _build(root, base_name=repo.name, paths=repo.paths, targets=repo.targets)
    if not built:
        where = ", ".join(repo.paths) or "the repository"
        raise BundleInvalid(f"no bundles found in {where}")
    prepared: list[PreparedBundle] = []
    seen: set[str] = set()
    for spec, resources in built:
        if spec.name in seen:
            raise BundleInvalid(f"two bundles of the commit are named {spec.name!r}")
        seen.add(spec.name)
        sources.validate(resources, origin=spec.name)  # what apply_bundle checks, up front
        blob = codec.encode_resources(resources)
        prepared.append(
            PreparedBundle(
                spec=_labelled(spec, repo.name, commit),
                blob=blob,
                manifest_id=ids.manifest_id_of_blob(blob),
            )
        )
    return BuiltCommit(commit=commit, bundles=prepared, warnings=warnings)


def _labelled(spec: BundleSpec, repo_name: str, commit: str) -> BundleSpec:
    labels = {**spec.labels, REPO_LABEL: repo_name, COMMIT_LABEL: commit}
    return spec.model_copy(update={"labels": labels})


# -- building (plain manifests until bundles.build is available) --------------


def _build(
    root: Path, *, base_name: str, paths: Sequence[str], targets: Sequence[BundleTarget]
) -> tuple[list[tuple[BundleSpec, list[BundleResource]]], list[str]]:
    """Bundles of plain manifests: a directory holding fleet.yaml is a bundle of its own.

    Each path (none: the root) is a bundle of the manifests under it, except
    subdirectories holding a ``fleet.yaml``, which become bundles of their own
    (Fleet's discovery). Options in fleet.yaml are not read here.
    """
    out: list[tuple[BundleSpec, list[BundleResource]]] = []
    for path in paths or ["."]:
        base = (root / path).resolve()
        if not base.is_relative_to(root.resolve()) or not base.is_dir():
            raise BundleInvalid(f"{path}: no such directory in the repository")
        bundle_dirs = sorted(
            {f.parent for name in FLEET_YAML for f in base.rglob(name) if _visible(f, root)}
        )
        roots = bundle_dirs or [base]
        for bundle_root in roots:
            resources = _manifests(bundle_root, root, stop=set(bundle_dirs) - {bundle_root})
            if not resources:
                continue
            rel = bundle_root.relative_to(root.resolve()).as_posix()
            try:
                spec = BundleSpec(
                    name=_bundle_name(base_name, rel),
                    options=DeploymentOptions(),
                    targets=tuple(targets) or EVERY_CLUSTER,
                )
            except ValueError as exc:
                raise BundleInvalid(f"{rel}: {exc}") from exc
            out.append((spec, resources))
    return out, []


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _manifests(directory: Path, root: Path, *, stop: set[Path]) -> list[BundleResource]:
    resources = []
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or path.suffix not in MANIFEST_SUFFIXES or path.name in FLEET_YAML:
            continue
        if not _visible(path, root) or any(path.is_relative_to(s) for s in stop):
            continue
        rel = path.relative_to(root).as_posix()
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise BundleInvalid(f"{rel}: not UTF-8 text ({exc.reason})") from exc
        resources.append(BundleResource(name=rel, content=content))
    return resources


def _bundle_name(base: str, rel: str) -> str:
    """``base`` for the repository root, ``base-<path>`` below it; a DNS label, as Fleet."""
    if rel in ("", "."):
        return base
    name = re.sub(r"[^a-z0-9]+", "-", f"{base}-{rel}".lower()).strip("-")
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


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
