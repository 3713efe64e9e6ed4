"""A chart's declared dependencies, fetched into ``charts/`` when they are not there.

An umbrella chart lists its subcharts in ``Chart.yaml`` (``dependencies:``
with ``name``, ``version`` range and ``repository``) and often keeps only that
list in git, not the archives. Fleet runs ``helm dependency update`` on such a
chart when it reads the bundle; Helm refuses to render it otherwise. shoal
does the same through its own chart cache (:mod:`bundles.charts`), so the
downloads get the cache's timeouts, size limits and reuse: a dependency is
fetched once per version, however many bundles and renders use it.

The chart in the bundle is never written to: when something is missing, the
chart is copied into a work directory and the copy's ``charts/`` is filled.
Repositories are given by URL (``https://``, ``oci://``) or as ``file://``
paths relative to the chart; the ``@name``/``alias:name`` spellings, which
refer to ``helm repo add`` configuration, are refused with a message saying so.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path
from typing import Any

import yaml

from bundles.charts import ChartCache, Credentials
from bundles.engines import load_documents
from bundles.errors import ChartNotFound, HelmError


def _chart_yaml(chart_dir: Path) -> dict[str, Any]:
    path = chart_dir / "Chart.yaml"
    try:
        documents = load_documents(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HelmError(f"{path}: cannot read: {exc}", file=str(path)) from exc
    meta = documents[0] if documents else None
    if not isinstance(meta, dict):
        raise HelmError(f"{path}: not a chart's metadata (a YAML mapping)", file=str(path))
    return meta


def _archive_chart_name(archive: Path) -> str | None:
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == "Chart.yaml" and member.isfile():
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        return None
                    meta = yaml.safe_load(extracted.read())
                    return str(meta.get("name")) if isinstance(meta, dict) else None
    except (tarfile.TarError, OSError, EOFError, yaml.YAMLError):
        return None
    return None


def present_subcharts(chart_dir: Path) -> set[str]:
    """Names of the charts in ``charts/``, as directories or archives."""
    names: set[str] = set()
    charts = chart_dir / "charts"
    if not charts.is_dir():
        return names
    for entry in charts.iterdir():
        if entry.is_dir() and (entry / "Chart.yaml").is_file():
            name = _chart_yaml(entry).get("name")
            if name:
                names.add(str(name))
        elif entry.is_file() and entry.name.endswith(".tgz"):
            found = _archive_chart_name(entry)
            if found:
                names.add(found)
    return names


def missing_dependencies(chart_dir: Path) -> list[dict[str, Any]]:
    """The ``dependencies`` entries of ``Chart.yaml`` with no chart of that name in ``charts/``."""
    declared = _chart_yaml(chart_dir).get("dependencies") or []
    if not isinstance(declared, list):
        raise HelmError(
            f"{chart_dir / 'Chart.yaml'}: dependencies must be a list",
            file=str(chart_dir / "Chart.yaml"),
            field="dependencies",
        )
    present = present_subcharts(chart_dir)
    return [d for d in declared if isinstance(d, dict) and str(d.get("name", "")) not in present]


def with_dependencies(
    chart_dir: Path,
    workdir: Path,
    *,
    cache: ChartCache,
    credentials: Credentials | None = None,
    plain_http: bool = False,
    root: Path | None = None,
) -> Path:
    """``chart_dir`` if its dependencies are all in ``charts/``, else a copy in ``workdir``.

    The copy's ``charts/`` holds every declared dependency. A ``file://``
    dependency must lie inside ``root`` (the bundle) when one is given: a
    repository's chart cannot pull in a directory from elsewhere on the host.

    Raises :class:`ChartNotFound` for a dependency that is not in its
    repository, and :class:`HelmError` for one whose repository cannot be used.
    """
    missing = missing_dependencies(chart_dir)
    if not missing:
        return chart_dir
    copy = workdir / chart_dir.resolve().name
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(chart_dir, copy, symlinks=False)
    charts = copy / "charts"
    charts.mkdir(exist_ok=True)
    for dependency in missing:
        _vendor(
            dependency,
            chart_dir,
            charts,
            cache=cache,
            credentials=credentials,
            plain_http=plain_http,
            root=root,
        )
    return copy


def _vendor(
    dependency: dict[str, Any],
    chart_dir: Path,
    charts: Path,
    *,
    cache: ChartCache,
    credentials: Credentials | None,
    plain_http: bool,
    root: Path | None = None,
) -> None:
    name = str(dependency.get("name", ""))
    version = str(dependency.get("version", "") or "")
    repository = str(dependency.get("repository", "") or "").strip()
    where = f"{chart_dir / 'Chart.yaml'}: dependency {name!r}"
    if not name:
        raise HelmError(f"{where}: no name", file=str(chart_dir / "Chart.yaml"))
    if repository.startswith("file://"):
        source = (chart_dir / repository.removeprefix("file://")).resolve()
        if root is not None and not source.is_relative_to(root.resolve()):
            raise HelmError(
                f"{where}: {repository} is outside the bundle",
                file=str(chart_dir / "Chart.yaml"),
                field="dependencies",
            )
        if not (source / "Chart.yaml").is_file():
            raise ChartNotFound(f"{where}: {repository} is not a chart directory", file=str(source))
        shutil.copytree(source, charts / name, symlinks=False)
        return
    if not repository or repository.startswith(("@", "alias:")):
        raise HelmError(
            f"{where}: repository {repository!r} cannot be used; give the repository's "
            "URL (https:// or oci://) or a file:// path, or vendor the chart into charts/",
            file=str(chart_dir / "Chart.yaml"),
            field="dependencies",
        )
    if repository.startswith("oci://"):
        fetched = cache.fetch_oci(
            f"{repository.rstrip('/')}/{name}",
            version,
            credentials=credentials,
            plain_http=plain_http,
        )
    else:
        fetched = cache.fetch_from_repository(repository, name, version, credentials=credentials)
    shutil.copyfile(fetched.archive, charts / f"{name}-{fetched.version or 'unversioned'}.tgz")
