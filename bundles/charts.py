"""Where a bundle's chart comes from, and the on-disk cache of downloaded charts.

Fleet accepts four chart sources in ``fleet.yaml``'s ``helm`` section, and so
does shoal:

- ``chart: ./path`` — a directory (or ``.tgz``) inside the bundle;
- ``chart: https://host/chart-1.2.3.tgz`` — an archive at a URL;
- ``repo: https://charts.example.com`` + ``chart: name`` + ``version: ^1.2`` —
  a chart repository: its ``index.yaml`` is read, the highest version the
  range admits is picked (:mod:`bundles.semver`), and the archive is
  downloaded from the entry's first URL (relative URLs resolve against the
  repository, as Helm resolves them);
- ``chart: oci://registry/path/chart`` + ``version`` — an OCI registry
  (:mod:`bundles.oci`); ``repo: oci://...`` with a chart name works as well.

Downloaded archives are stored once under their sha256 digest in a cache
directory, with a small reference file per source (URL, repository + chart +
version, OCI reference + tag) pointing at the digest. A source pinned to an
exact version is never fetched twice; a range or "newest" is resolved again
when its reference is older than ``index_ttl``, and even then the archive is
downloaded only if the resolved version is not in the cache yet.

All functions block; async callers run them with ``asyncio.to_thread``.
Credentials are passed per call, used for the source's host only, and never
logged or written to the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import yaml

from bundles import semver
from bundles.engines import load_documents
from bundles.errors import ChartNotFound, HelmError
from bundles.fetch import (
    Credentials,
    Downloaded,
    HttpStatusError,
    Limits,
    TransferError,
    download,
    get,
)
from bundles.oci import OciClient, OciReference, tag_from_version, version_from_tag

INDEX_TTL = 60.0
"""Seconds a resolved version range stays good before the index (or tag list) is read again."""

CHART_LIMITS = Limits(timeout=30.0, deadline=300.0, max_bytes=64 * 1024 * 1024)
"""A chart archive: 64 MiB at most (large charts with many CRDs are a few MiB)."""

INDEX_LIMITS = Limits(timeout=30.0, deadline=300.0, max_bytes=128 * 1024 * 1024)
"""A repository index: public repositories' indexes run to tens of MiB."""

MAX_CHART_FILES_BYTES = 256 * 1024 * 1024
"""Unpacked size of a chart read by :func:`chart_files`, against archive bombs."""

__all__ = [
    "ChartCache",
    "Credentials",
    "FetchedChart",
    "chart_files",
    "default_cache_dir",
    "is_remote",
    "locate_chart",
]


def default_cache_dir() -> Path:
    """``$SHOAL_CHART_CACHE``, else ``$XDG_CACHE_HOME/shoal/charts``, else ``~/.cache/...``."""
    if explicit := os.environ.get("SHOAL_CHART_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shoal" / "charts"


@dataclass(frozen=True)
class FetchedChart:
    """A chart archive in the cache."""

    archive: Path
    digest: str
    """``sha256:<hex>`` of the archive."""
    source: str
    """Where it was (or would have been) downloaded from."""
    version: str
    """The version picked; ``""`` for an archive URL, whose version the URL alone implies."""
    downloaded: bool
    """Whether this call downloaded it (``False``: served from the cache)."""


def is_remote(chart: str, repo: str = "") -> bool:
    """Whether a ``helm.chart``/``helm.repo`` pair names a chart outside the bundle."""
    return bool(repo) or _scheme(chart) in ("http", "https", "oci")


def _scheme(text: str) -> str:
    return urlsplit(text).scheme.lower() if "://" in text else ""


def _describe(chart: str, repo: str, version: str) -> str:
    parts = [f"chart {chart!r}"]
    if repo:
        parts.append(f"repository {repo}")
    parts.append(f"version {version!r}" if version else "newest version")
    return ", ".join(parts)


class ChartCache:
    """Downloads charts into a digest-addressed cache directory and resolves versions.

    Safe to share between threads and processes: every file is written under
    a temporary name and renamed into place, and two writers of the same
    digest write the same bytes.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        index_ttl: float = INDEX_TTL,
        chart_limits: Limits = CHART_LIMITS,
        index_limits: Limits = INDEX_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root if root is not None else default_cache_dir()
        self._ttl = index_ttl
        self._chart_limits = chart_limits
        self._index_limits = index_limits
        self._ssl = ssl_context
        self._clock = clock

    # -- public entry points -------------------------------------------------------------------

    def fetch(
        self,
        chart: str,
        *,
        repo: str = "",
        version: str = "",
        credentials: Credentials | None = None,
        plain_http: bool = False,
    ) -> FetchedChart:
        """The archive for a remote ``helm.chart``/``helm.repo``/``helm.version``.

        ``plain_http`` lets ``oci://`` references use HTTP instead of HTTPS (a
        registry on a private network). Raises :class:`ChartNotFound` when the
        chart, the repository or a matching version is not there, and
        :class:`HelmError` for any other failure; both name the chart, the
        repository, the version and the HTTP status.
        """
        if _scheme(repo) == "oci":
            ref = f"{repo.rstrip('/')}/{chart}" if chart else repo
            return self.fetch_oci(ref, version, credentials=credentials, plain_http=plain_http)
        if _scheme(chart) == "oci":
            return self.fetch_oci(chart, version, credentials=credentials, plain_http=plain_http)
        if repo:
            return self.fetch_from_repository(repo, chart, version, credentials=credentials)
        if _scheme(chart) in ("http", "https"):
            return self.fetch_url(chart, credentials=credentials)
        raise HelmError(
            f"{_describe(chart, repo, version)}: not a URL, an oci:// reference or a chart "
            "in a repository",
            file=chart,
            field="helm.chart",
        )

    def fetch_url(self, url: str, *, credentials: Credentials | None = None) -> FetchedChart:
        """The ``.tgz`` at ``url``; downloaded once, then served from the cache."""
        key = f"url {url}"
        if cached := self._hit(key, ttl=None):
            return cached
        what = _describe(url, "", "")
        got = self._download(url, credentials, what=what, field="helm.chart", chart=url)
        archive = self._store(got, expected=None, what=what, chart=url)
        self._remember(key, {"digest": got.sha256, "version": "", "source": url})
        return FetchedChart(archive, f"sha256:{got.sha256}", url, "", downloaded=True)

    def fetch_from_repository(
        self,
        repo: str,
        chart: str,
        version: str = "",
        *,
        credentials: Credentials | None = None,
    ) -> FetchedChart:
        """``chart`` at ``version`` (exact, a range, or ``""`` for the newest) from a repository."""
        what = _describe(chart, repo, version)
        exact = semver.is_exact(version)
        range_key = f"repo {repo} {chart} {version}"
        pinned = self._hit(f"repo {repo} {chart} ={version.strip()}", ttl=None) if exact else None
        if cached := pinned or (None if exact else self._hit(range_key, ttl=self._ttl)):
            return cached

        entries = self._index_entries(repo, chart, credentials, what=what)
        listed = {str(e.get("version", "")): e for e in entries if isinstance(e, dict)}
        picked = semver.pick(listed, version)
        if picked is None:
            available = ", ".join(sorted(listed, key=_version_sort_key, reverse=True)[:10])
            raise ChartNotFound(
                f"{what}: no version matches in {repo} (available: {available or 'none'})",
                file=chart,
                field="helm.version",
            )
        entry = listed[picked]
        urls = entry.get("urls") or []
        if not urls:
            raise ChartNotFound(
                f"{what}: index entry {picked} lists no URL", file=chart, field="helm.repo"
            )
        url = urljoin(repo.rstrip("/") + "/", str(urls[0]))
        pinned_key = f"repo {repo} {chart} ={picked}"
        meta_out = {"version": picked, "source": url}
        hit = self._hit(pinned_key, ttl=None)
        if hit is not None:
            fetched = hit
        else:
            got = self._download(url, credentials, what=what, field="helm.chart", chart=chart)
            expected = str(entry.get("digest") or "").removeprefix("sha256:") or None
            archive = self._store(got, expected=expected, what=what, chart=chart)
            fetched = FetchedChart(archive, f"sha256:{got.sha256}", url, picked, downloaded=True)
            self._remember(pinned_key, {"digest": got.sha256, **meta_out})
        if not exact:
            self._remember(
                range_key, {"digest": fetched.digest.removeprefix("sha256:"), **meta_out}
            )
        return fetched

    def fetch_oci(
        self,
        ref: str,
        version: str = "",
        *,
        credentials: Credentials | None = None,
        plain_http: bool = False,
    ) -> FetchedChart:
        """The chart at ``oci://registry/path/chart``, ``version`` exact, a range or newest."""
        what = _describe(ref, "", version)
        try:
            parsed = OciReference.parse(ref)
        except ValueError as exc:
            raise HelmError(f"{what}: {exc}", file=ref, field="helm.chart") from exc
        exact = semver.is_exact(version)
        range_key = f"oci {parsed} {version}"
        if not exact and (cached := self._hit(range_key, ttl=self._ttl)):
            return cached
        client = OciClient(
            credentials=credentials,
            limits=self._chart_limits,
            ssl_context=self._ssl,
            plain_http=plain_http,
        )
        with _converted(what, chart=ref, field="helm.version"):
            if exact:
                picked = version.strip()
            else:
                tags = [version_from_tag(t) for t in client.tags(parsed)]
                found = semver.pick(tags, version)
                if found is None:
                    raise ChartNotFound(
                        f"{what}: no tag matches (tags: {', '.join(tags[:10]) or 'none'})",
                        file=ref,
                        field="helm.version",
                    )
                picked = found
        source = f"{parsed}:{tag_from_version(picked)}"
        pinned_key = f"oci {source}"
        hit = self._hit(pinned_key, ttl=None)
        if hit is not None:
            fetched = hit
        else:
            with _converted(what, chart=ref, field="helm.chart"):
                layer = client.chart_layer(parsed, tag_from_version(picked))
                got = client.download_layer(parsed, layer, self._blob_dir())
            archive = self._store(got, expected=None, what=what, chart=ref)
            fetched = FetchedChart(archive, layer.digest, source, picked, downloaded=True)
            self._remember(pinned_key, {"digest": got.sha256, "version": picked, "source": source})
        if not exact:
            self._remember(
                range_key,
                {
                    "digest": fetched.digest.removeprefix("sha256:"),
                    "version": picked,
                    "source": source,
                },
            )
        return fetched

    # -- repository index ----------------------------------------------------------------------

    def _index_entries(
        self, repo: str, chart: str, credentials: Credentials | None, *, what: str
    ) -> list[Any]:
        if _scheme(repo) not in ("http", "https"):
            raise ChartNotFound(
                f"{what}: repository URL must be http(s):// or oci://",
                file=chart,
                field="helm.repo",
            )
        url = urljoin(repo.rstrip("/") + "/", "index.yaml")
        with _converted(what, chart=chart, field="helm.repo"):
            resp = get(
                url,
                authorization=credentials.basic() if credentials else None,
                limits=self._index_limits,
                ssl_context=self._ssl,
            )
        try:
            documents = load_documents(resp.body.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ChartNotFound(
                f"{what}: {url} is not a chart repository index: {exc}",
                file=chart,
                field="helm.repo",
            ) from exc
        index = documents[0] if documents else None
        entries = index.get("entries") if isinstance(index, dict) else None
        if not isinstance(entries, dict):
            raise ChartNotFound(
                f"{what}: {url} is not a chart repository index (no entries)",
                file=chart,
                field="helm.repo",
            )
        versions = entries.get(chart)
        if not isinstance(versions, list) or not versions:
            raise ChartNotFound(
                f"{what}: no chart named {chart!r} in {url}", file=chart, field="helm.chart"
            )
        return versions

    # -- transfers and errors ------------------------------------------------------------------

    def _download(
        self, url: str, credentials: Credentials | None, *, what: str, field: str, chart: str
    ) -> Downloaded:
        with _converted(what, chart=chart, field=field):
            return download(
                url,
                self._blob_dir(),
                authorization=credentials.basic() if credentials else None,
                limits=self._chart_limits,
                ssl_context=self._ssl,
            )

    # -- the cache on disk ---------------------------------------------------------------------

    def _blob_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    def _blob(self, hexdigest: str) -> Path:
        return self._blob_dir() / f"{hexdigest}.tgz"

    def _ref_path(self, key: str) -> Path:
        return self.root / "refs" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def _hit(self, key: str, *, ttl: float | None) -> FetchedChart | None:
        """The archive a reference points at, if the reference is fresh and the archive there."""
        try:
            record = json.loads(self._ref_path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        if ttl is not None and self._clock() - float(record.get("resolved_at", 0)) > ttl:
            return None
        hexdigest = str(record.get("digest", ""))
        archive = self._blob(hexdigest)
        if not hexdigest or not archive.is_file():
            return None
        return FetchedChart(
            archive,
            f"sha256:{hexdigest}",
            str(record.get("source", "")),
            str(record.get("version", "")),
            downloaded=False,
        )

    def _remember(self, key: str, fields: dict[str, str]) -> None:
        record = {"key": key, "resolved_at": self._clock(), **fields}
        _write_atomically(self._ref_path(key), json.dumps(record).encode())

    def _store(self, got: Downloaded, *, expected: str | None, what: str, chart: str) -> Path:
        if expected and expected != got.sha256:
            got.path.unlink(missing_ok=True)
            raise HelmError(
                f"{what}: downloaded archive has digest sha256:{got.sha256}, the index says "
                f"sha256:{expected}",
                file=chart,
                field="helm.chart",
            )
        archive = self._blob(got.sha256)
        os.replace(got.path, archive)
        return archive


@contextmanager
def _converted(what: str, *, chart: str, field: str) -> Iterator[None]:
    """Turns transfer failures into bundle errors that say which chart and why."""
    try:
        yield
    except HttpStatusError as exc:
        kind = ChartNotFound if exc.status in (404, 410) else HelmError
        raise kind(f"{what}: {exc}", file=chart, field=field) from exc
    except TransferError as exc:
        raise HelmError(f"{what}: {exc}", file=chart, field=field) from exc


def _version_sort_key(text: str) -> tuple[int, semver.Version | None]:
    try:
        return (1, semver.Version.parse(text))
    except semver.InvalidVersion:
        return (0, None)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def locate_chart(
    chart: str,
    *,
    base: Path,
    root: Path | None = None,
    repo: str = "",
    version: str = "",
    cache: ChartCache | None = None,
    credentials: Credentials | None = None,
    plain_http: bool = False,
) -> Path:
    """A path Helm can load for ``helm.chart``: a directory or ``.tgz``.

    A local ``chart`` is relative to ``base`` (the directory of ``fleet.yaml``;
    ``""`` is ``base`` itself) and, when ``root`` is given, must stay inside
    it. A remote one is fetched through ``cache`` (a default cache if none).
    """
    if is_remote(chart, repo):
        return (
            (cache or ChartCache())
            .fetch(
                chart, repo=repo, version=version, credentials=credentials, plain_http=plain_http
            )
            .archive
        )
    if _scheme(chart):
        raise HelmError(
            f"chart {chart!r}: unsupported source (want a path, http(s):// or oci://)",
            file=chart,
            field="helm.chart",
        )
    path = (base / chart).resolve() if chart else base.resolve()
    if root is not None and not path.is_relative_to(root.resolve()):
        raise ChartNotFound(
            f"chart {chart!r}: {path} is outside the repository", file=chart, field="helm.chart"
        )
    if path.is_dir() and (path / "Chart.yaml").is_file():
        return path
    if path.is_file() and path.name.endswith((".tgz", ".tar.gz")):
        return path
    raise ChartNotFound(
        f"chart {chart!r}: {path} is neither a chart directory (with Chart.yaml) nor a .tgz",
        file=chart or str(base),
        field="helm.chart",
    )


def chart_files(archive: Path, *, max_bytes: int = MAX_CHART_FILES_BYTES) -> dict[str, bytes]:
    """The files of a chart archive, named relative to the chart's own directory.

    This is how a downloaded chart becomes bundle resources. Entries that
    would escape the chart (absolute paths, ``..``), links and devices are
    refused; so is an archive that unpacks to more than ``max_bytes``.
    """
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                if member.isdir():
                    continue
                name = member.name
                parts = name.split("/")
                if not member.isfile() or name.startswith("/") or ".." in parts or len(parts) < 2:
                    raise HelmError(
                        f"{archive}: refusing archive entry {name!r}", file=str(archive)
                    )
                total += member.size
                if total > max_bytes:
                    raise HelmError(
                        f"{archive}: unpacks to more than {max_bytes} bytes", file=str(archive)
                    )
                extracted = tar.extractfile(member)
                data = extracted.read() if extracted is not None else b""
                files["/".join(parts[1:])] = data
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise HelmError(f"{archive}: not a chart archive: {exc}", file=str(archive)) from exc
    return files
