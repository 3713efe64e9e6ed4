"""Finding bundles in a directory tree, as Fleet scans a git repository.

Under the scanned root (or each of ``paths``, globs relative to it):

* every directory holding a ``fleet.yaml`` (or ``fleet.yml``) is a bundle,
  and its files belong to it alone: a parent bundle leaves them out;
* the scanned directory itself is a bundle too when it has no ``fleet.yaml``
  but holds YAML files of its own (outside nested bundles);
* hidden files and directories are skipped, and so is whatever a
  ``.fleetignore`` matches (see :class:`_Ignore`).

A bundle's files become :class:`~protocol.models.BundleResource`\\s named by
their path relative to the bundle's directory: text as is, anything else
(such as ``charts/*.tgz``) base64-encoded. ``fleet.yaml`` itself and the
``helm.valuesFiles`` it names are not resources: the values files are merged
into ``helm.values`` here, as Fleet does when it reads a bundle. How a bundle
deploys (Helm chart, Kustomize, raw manifests) follows from its files and
options: :func:`determine_style`. Bundle names derive from a base name and the
path as Fleet derives them (:func:`helm_release_name`), unless ``fleet.yaml``
sets ``name``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import yaml

from bundles.errors import DiscoveryError, FleetYamlError
from bundles.fleetyaml import (
    FLEET_YAML_NAMES,
    FleetYaml,
    YamlLoader,
    json_keys,
    load_fleet_yaml,
    to_spec,
)
from protocol.errors import InvalidNameError
from protocol.models import (
    BundleResource,
    BundleSpec,
    BundleTarget,
    DeploymentOptions,
    HelmOptions,
    merge_values,
    validate_bundle_name,
)

MAX_BUNDLE_BYTES = 64 * 1024 * 1024
MAX_NAME = 53  # Helm's limit for release names, which Fleet derives from bundle names
FLEET_IGNORE = ".fleetignore"
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml")


@dataclass(frozen=True)
class BundleStyle:
    """How a bundle deploys: a Helm chart, a Kustomize build, or its raw manifests."""

    kind: Literal["helm", "kustomize", "manifests"]
    chart_dir: str = ""  # a chart in the bundle: its directory ("." for the bundle's own)
    chart_archive: str = ""  # a packaged chart in the bundle (``charts/app-1.0.tgz``)
    remote_chart: bool = False  # a chart fetched from helm.repo or a URL
    kustomize_dir: str = ""  # the directory of the kustomization.yaml to build


@dataclass(frozen=True)
class DiscoveredBundle:
    path: str  # the bundle's directory relative to the scanned root, "." for the root
    name: str
    fleet: FleetYaml | None
    warnings: tuple[str, ...]
    resources: tuple[BundleResource, ...]
    style: BundleStyle

    def spec(self, *, targets: Sequence[BundleTarget] = ()) -> BundleSpec:
        """The bundle to apply, deployed to ``targets`` (every cluster when there are none)."""
        return to_spec(self.name, self.fleet or FleetYaml(), targets=targets)


def discover(
    root: Path, *, paths: Sequence[str] = (), base_name: str | None = None
) -> list[DiscoveredBundle]:
    """The bundles under ``root``; ``base_name`` (default: the root's name) prefixes their names."""
    if not root.is_dir():
        raise DiscoveryError(f"{root}: not a directory", file=str(root))
    base = root.resolve().name if base_name is None else base_name
    found: dict[str, None] = {}
    for start in _starts(root, paths):
        if _fleet_yaml_in(root / start) or _has_own_yaml(root, start):
            found[start] = None
        for directory in _subdirectories(root / start):
            if _fleet_yaml_in(directory):
                found[directory.relative_to(root).as_posix()] = None
    bundles = [_read_bundle(root, path, base) for path in found]
    if not bundles:
        where = ", ".join(paths) if paths else str(root)
        raise DiscoveryError(f"{where}: no bundle found (no fleet.yaml and no YAML files)")
    by_name: dict[str, str] = {}
    for bundle in bundles:
        if bundle.name in by_name:
            raise DiscoveryError(
                f"bundles {by_name[bundle.name]!r} and {bundle.path!r} are both named "
                f"{bundle.name!r}; set a distinct name in their fleet.yaml",
                field="name",
            )
        by_name[bundle.name] = bundle.path
    return bundles


def determine_style(names: Sequence[str], options: DeploymentOptions) -> BundleStyle:
    """Which engine deploys a bundle of these files with these options, as Fleet decides.

    A ``Chart.yaml`` at ``helm.chart`` (default: the bundle's root) makes a
    Helm bundle, as does a chart from ``helm.repo`` or a URL; otherwise a
    ``kustomization.yaml`` at ``kustomize.dir`` (default: the root) makes a
    Kustomize bundle; otherwise the bundle is raw manifests.
    """
    present = set(names)
    helm = options.helm or HelmOptions()
    chart = helm.chart or helm.repo
    chart_yaml = _normal(posixpath.join(chart, "Chart.yaml")) if chart else "Chart.yaml"
    if helm.repo:
        return BundleStyle("helm", remote_chart=True)
    if chart_yaml in present:
        return BundleStyle("helm", chart_dir=posixpath.dirname(chart_yaml) or ".")
    if chart and _normal(chart) in present:
        return BundleStyle("helm", chart_archive=_normal(chart))
    if chart:
        return BundleStyle("helm", remote_chart=True)
    directory = options.kustomize.dir if options.kustomize else ""
    for name in KUSTOMIZATION_NAMES:
        kustomization = _normal(posixpath.join(directory, name))
        if kustomization in present:
            return BundleStyle("kustomize", kustomize_dir=posixpath.dirname(kustomization) or ".")
    return BundleStyle("manifests")


def helm_release_name(text: str) -> str:
    """A DNS-label name from a path-like string, as Fleet names bundles and releases.

    ``/`` becomes ``-``; when the text had capitals or other characters a
    DNS label cannot hold, a hash of it is appended first so that different
    texts stay different; names over 53 characters are cut and end in a
    short hash.
    """
    original = text
    text = text.replace("/", "-")
    if text != text.lower() or _DISALLOWED.search(text):
        text = f"{text}-{_md5(text)[:8]}"
    text = _DISALLOWED.sub("-", text.lower())
    text = re.sub("-+", "-", text).strip("-")
    if _DNS_LABEL.match(text):
        return _limit(text, MAX_NAME)
    return _md5(original)[:24]


_DISALLOWED = re.compile(r"[^a-zA-Z0-9-]+")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _limit(text: str, count: int) -> str:
    if len(text) <= count:
        return text
    hex_len = 5
    if count <= hex_len + 1:
        return text[:count]
    keep = count - hex_len - 1
    separator = "" if text[keep - 1] == "-" else "-"
    return f"{text[:keep]}{separator}{_md5(text)[:hex_len]}"


def _normal(path: str) -> str:
    return posixpath.normpath(path).lstrip("/")


# -- walking -----------------------------------------------------------------------


def _starts(root: Path, paths: Sequence[str]) -> list[str]:
    if not paths:
        return ["."]
    starts: list[str] = []
    for pattern in paths:
        cleaned = _normal(pattern.lstrip("/") or ".")
        if cleaned == ".." or cleaned.startswith("../"):
            raise DiscoveryError(f"path {pattern!r} leaves {root}", field="paths")
        matches = [root] if cleaned == "." else sorted(root.glob(cleaned))
        dirs = [m.relative_to(root).as_posix() for m in matches if m.is_dir()]
        if not dirs:
            raise DiscoveryError(f"path {pattern!r} matches no directory under {root}")
        starts.extend(dirs)
    return starts


def _fleet_yaml_in(directory: Path) -> Path | None:
    for name in FLEET_YAML_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def _subdirectories(directory: Path) -> list[Path]:
    out: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
            out.append(entry)
            out.extend(_subdirectories(entry))
    return out


def _has_own_yaml(root: Path, start: str) -> bool:
    return any(rel.endswith((".yaml", ".yml")) for rel, _ in _files(root / start, root))


class _Ignore:
    """Patterns of the ``.fleetignore`` files on the way down to a directory.

    As in Fleet, a pattern applies in its file's directory and every
    directory below, and is matched against an entry's base name with
    shell wildcards (``*``, ``?``, ``[...]``); ``name/*`` (and, as in
    gitignore, ``name/``) ignores a directory of that name. Lines starting
    with ``#`` and blank lines are skipped.
    """

    def __init__(self, patterns: tuple[str, ...] = ()) -> None:
        self.patterns = patterns

    def below(self, directory: Path) -> _Ignore:
        path = directory / FLEET_IGNORE
        if not path.is_file():
            return self
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        new = [re.sub(r"(?<!\\)\s+$", "", line) for line in lines]
        return _Ignore(self.patterns + tuple(p for p in new if p and not p.startswith("#")))

    def ignores(self, name: str, *, is_dir: bool) -> bool:
        for pattern in self.patterns:
            if pattern.endswith(("/*", "/")):
                if is_dir and pattern.rstrip("*").rstrip("/") == name:
                    return True
            elif fnmatch.fnmatchcase(name, pattern):
                return True
        return False


def _files(bundle_dir: Path, root: Path | None = None) -> list[tuple[str, Path]]:
    """(path relative to the bundle, file) for every file that belongs to the bundle.

    Symbolic links to directories are not followed, and a link to a file
    outside ``root`` (default: the bundle) is left out: a repository must not
    ship the files of the machine that reads it.
    """
    out: list[tuple[str, Path]] = []
    boundary = (root or bundle_dir).resolve()

    def walk(directory: Path, prefix: str, ignore: _Ignore) -> None:
        ignore = ignore.below(directory)
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith("."):
                continue
            is_dir = entry.is_dir() and not entry.is_symlink()
            if ignore.ignores(entry.name, is_dir=is_dir):
                continue
            if is_dir:
                if not _fleet_yaml_in(entry):
                    walk(entry, f"{prefix}{entry.name}/", ignore)
            elif entry.is_file() and entry.resolve().is_relative_to(boundary):
                out.append((f"{prefix}{entry.name}", entry))

    walk(bundle_dir, "", _Ignore())
    return out


# -- reading -----------------------------------------------------------------------


def _read_bundle(root: Path, path: str, base: str) -> DiscoveredBundle:
    directory = root / path
    fleet: FleetYaml | None = None
    warnings: list[str] = []
    fleet_file = _fleet_yaml_in(directory)
    if fleet_file is not None:
        shown = _shown(root, fleet_file)
        fleet, warnings = load_fleet_yaml(_read_text(fleet_file, shown), shown)
        fleet = _with_values_files(fleet, root, directory)
    skip = {fleet_file.name} if fleet_file else set()
    skip |= _values_files(fleet)
    resources: list[BundleResource] = []
    total = 0
    for rel, file in _files(directory, root):
        if rel in skip:
            continue
        data = file.read_bytes()
        total += len(data)
        if total > MAX_BUNDLE_BYTES:
            raise DiscoveryError(
                f"{_shown(root, directory)}: bundle exceeds {MAX_BUNDLE_BYTES // 2**20} MiB",
                file=_shown(root, directory),
            )
        resources.append(BundleResource.of_bytes(rel, data))
    name = helm_release_name(posixpath.normpath(posixpath.join(base, path)))
    if fleet is not None and fleet.name:
        try:
            name = validate_bundle_name(fleet.name)
        except InvalidNameError as exc:
            raise FleetYamlError(
                f"{fleet.file}: name: {exc}", file=fleet.file, field="name"
            ) from exc
    options = to_spec(name, fleet).options if fleet is not None else DeploymentOptions()
    style = determine_style([r.name for r in resources], options)
    return DiscoveredBundle(
        path=path,
        name=name,
        fleet=fleet,
        warnings=tuple(warnings),
        resources=tuple(resources),
        style=style,
    )


def _shown(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def _read_text(path: Path, shown: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FleetYamlError(f"{shown}: not UTF-8 text ({exc.reason})", file=shown) from exc


def _values_files(fleet: FleetYaml | None) -> set[str]:
    """The values files a fleet.yaml names (they are options, not resources)."""
    if fleet is None:
        return set()
    names: set[str] = set()
    for helm in _helm_options(fleet):
        names |= {_normal(f) for f in helm.values_files}
    return names


def _helm_options(fleet: FleetYaml) -> list[HelmOptions]:
    targets = (*fleet.targets, *fleet.target_customizations)
    return [h for h in (fleet.helm, *(t.helm for t in targets)) if h is not None]


def _with_values_files(fleet: FleetYaml, root: Path, directory: Path) -> FleetYaml:
    """``fleet`` with each ``helm.valuesFiles`` merged over ``helm.values``, in order.

    The file names stay in ``values_files``; their content is in ``values``.
    """

    def merged(helm: HelmOptions | None, field: str) -> HelmOptions | None:
        if helm is None or not helm.values_files:
            return helm
        values = dict(helm.values)
        for name in helm.values_files:
            path = (directory / name).resolve()
            if not path.is_relative_to(root.resolve()) or not path.is_file():
                raise DiscoveryError(
                    f"{fleet.file}: {field}: no file {name!r} in the bundle",
                    file=fleet.file,
                    field=field,
                )
            try:
                data = json_keys(yaml.load(path.read_text(encoding="utf-8"), Loader=YamlLoader))
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise DiscoveryError(
                    f"{fleet.file}: {field}: {name} is not a YAML file of values: {exc}",
                    file=str(PurePosixPath(fleet.file).parent / name),
                    field=field,
                ) from exc
            if data is not None and not isinstance(data, dict):
                raise DiscoveryError(
                    f"{fleet.file}: {field}: {name} holds {type(data).__name__}, not a map",
                    field=field,
                )
            values = merge_values(values, data or {})
        return helm.model_copy(update={"values": values})

    customizations = tuple(
        tc.model_copy(
            update={"helm": merged(tc.helm, f"targetCustomizations[{i}].helm.valuesFiles")}
        )
        for i, tc in enumerate(fleet.target_customizations)
    )
    return fleet.model_copy(
        update={
            "helm": merged(fleet.helm, "helm.valuesFiles"),
            "target_customizations": customizations,
            "targets": tuple(
                tc.model_copy(update={"helm": merged(tc.helm, f"targets[{i}].helm.valuesFiles")})
                for i, tc in enumerate(fleet.targets)
            ),
        }
    )
