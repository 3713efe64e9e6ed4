"""Sources of bundles: a directory of manifests becomes resources plus a spec.

``shoal apply DIR`` reads every ``*.yaml``/``*.yml`` file under DIR (hidden
files and directories skipped), validates each object, and refuses the whole
directory if any file is bad, naming the file, document and field. Bundles
of any kind (fleet.yaml, Helm, Kustomize, overlays) are checked by rendering
every variant once: :func:`validate_bundle`.
"""

from __future__ import annotations

from pathlib import Path

from bundles.build import check
from bundles.errors import BundleError
from controlplane.errors import BundleInvalid
from protocol.manifests import MANIFEST_SUFFIXES, ManifestError, parse_resources
from protocol.models import BundleResource, BundleSpec

MAX_BUNDLE_BYTES = 64 * 1024 * 1024


def read_directory(root: Path) -> list[BundleResource]:
    """The manifests under ``root``, named by their path relative to it."""
    if not root.exists():
        raise BundleInvalid(f"{root}: no such directory")
    if not root.is_dir():
        raise BundleInvalid(f"{root}: not a directory")
    resources: list[BundleResource] = []
    total = 0
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if not path.is_file() or path.suffix not in MANIFEST_SUFFIXES:
            continue
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise BundleInvalid(f"{path}: not UTF-8 text ({exc.reason})") from exc
        total += len(content)
        if total > MAX_BUNDLE_BYTES:
            raise BundleInvalid(f"{root}: bundle exceeds {MAX_BUNDLE_BYTES // 2**20} MiB")
        resources.append(BundleResource(name=rel.as_posix(), content=content))
    if not resources:
        raise BundleInvalid(f"{root}: no *.yaml or *.yml files found")
    validate(resources, origin=str(root))
    return resources


def validate_bundle(spec: BundleSpec, resources: list[BundleResource]) -> int:
    """Render every variant of the bundle once (Helm, Kustomize, overlays, templates).

    Returns how many objects its own options render; raises :class:`BundleInvalid`
    naming the bundle, the file and the cause. Runs engines: call it in a thread.
    """
    try:
        counts = check(spec, resources)
    except BundleError as exc:
        raise BundleInvalid(f"bundle {spec.name!r}: {exc}") from exc
    if not any(counts):
        raise BundleInvalid(f"bundle {spec.name!r}: the files render no Kubernetes objects")
    return counts[0]


def validate(resources: list[BundleResource], *, origin: str = "") -> int:
    """Check every object; returns how many there are or raises :class:`BundleInvalid`."""
    try:
        objects = parse_resources(resources)
    except ManifestError as exc:
        prefix = f"{origin.rstrip('/')}/" if origin else ""
        raise BundleInvalid(f"{prefix}{exc}") from exc
    if not objects:
        raise BundleInvalid(f"{origin or 'bundle'}: the files hold no Kubernetes objects")
    return len(objects)
