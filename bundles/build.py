"""A directory (a checkout, or what ``shoal apply`` is pointed at) -> bundles ready to apply.

This is where a Fleet repository becomes what shoal stores and sends:

1. :func:`bundles.discovery.discover` finds the bundles (each ``fleet.yaml``
   directory, or the directory's own manifests) and reads their files;
2. a chart that ``helm.chart``/``helm.repo`` fetches from a URL, a Helm
   repository or an OCI registry is downloaded (cached by digest) and put
   inside the bundle under ``.charts/<digest>/``, as Fleet puts it inside its
   Bundle, so agents at the edge never need to reach the internet; so are the
   subcharts a chart's ``Chart.yaml`` declares but git does not hold
   (``helm dependency update``, unless ``helm.disableDependencyUpdate``);
3. every variant the bundle can deploy as (its own options, and each target
   customization's) is rendered once with the real engines. Any failure
   rejects the whole build, naming the bundle, the file and the cause, so a
   broken commit never replaces a good one.

Variants are rendered for a stand-in cluster carrying the labels the
target's ``clusterSelector.matchLabels`` require. A ``${ }`` template that
reads a label no selector guarantees cannot be judged without a real
cluster; such a variant is checked with its values left untemplated, and a
cluster lacking that label reports the error as ErrApplied.
"""

from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bundles.chartdeps import with_dependencies
from bundles.charts import ChartCache, chart_files, is_remote
from bundles.discovery import DiscoveredBundle, discover
from bundles.errors import BundleError, TemplateError
from bundles.render import materialize, render_placed
from bundles.templating import ClusterContext
from protocol.models import (
    BundleResource,
    BundleSpec,
    BundleTarget,
    DeploymentOptions,
    HelmOptions,
)

CHARTS_DIR = ".charts"
# What Go's text/template says for a key a map does not have (missingkey=error).
_MISSING_KEY = "map has no entry for key"
_VALIDATION_CLUSTER = "validation"


@dataclass(frozen=True)
class BuiltBundle:
    """One bundle as it is stored: its spec and every file the agents need."""

    path: str  # the bundle's directory relative to the built root
    spec: BundleSpec
    resources: list[BundleResource]


@dataclass(frozen=True)
class BuildResult:
    bundles: list[BuiltBundle]
    warnings: list[str] = field(default_factory=list)


def build_bundles(
    root: Path,
    *,
    base_name: str | None = None,
    paths: Sequence[str] = (),
    targets: Sequence[BundleTarget] = (),
    cache: ChartCache | None = None,
    validate: bool = True,
) -> BuildResult:
    """Every bundle under ``root``, charts fetched, each variant rendered once.

    Raises :class:`BundleError` (naming the bundle, file and cause) when any
    bundle is invalid: all or nothing.
    """
    charts = cache or ChartCache()
    built: list[BuiltBundle] = []
    warnings: list[str] = []
    for found in discover(root, paths=paths, base_name=base_name):
        warnings.extend(found.warnings)
        try:
            bundle = _build_one(found, targets=targets, cache=charts)
            if validate:
                check(bundle.spec, bundle.resources)
        except BundleError as exc:
            raise _located(exc, found) from exc
        built.append(bundle)
    return BuildResult(built, warnings)


def _build_one(
    found: DiscoveredBundle, *, targets: Sequence[BundleTarget], cache: ChartCache
) -> BuiltBundle:
    spec = found.spec(targets=targets)
    resources = {r.name: r for r in found.resources}
    options = spec.options
    if options.helm is not None:
        options = options.model_copy(update={"helm": _embed(options.helm, resources, cache)})
    customized = []
    for target in spec.targets:
        helm = target.helm
        if helm is not None and is_remote(helm.chart, helm.repo):
            helm = _embed(helm, resources, cache)
        customized.append(target.model_copy(update={"helm": helm}))
    spec = spec.model_copy(update={"options": options, "targets": tuple(customized)})
    for helm in {
        h.chart: h for h in _helm_options(spec) if not h.disable_dependency_update
    }.values():
        _vendor_dependencies(helm.chart or ".", resources, cache)
    ordered = [resources[name] for name in sorted(resources)]
    return BuiltBundle(found.path, spec, ordered)


def _helm_options(spec: BundleSpec) -> list[HelmOptions]:
    found = [spec.options.helm or HelmOptions()]
    found += [spec.options.merged(t).helm or HelmOptions() for t in spec.targets if t.helm]
    return found


def _vendor_dependencies(
    chart: str, resources: dict[str, BundleResource], cache: ChartCache
) -> None:
    """Chart.yaml's dependencies fetched into the chart's ``charts/``, as Fleet runs
    ``helm dependency update`` when it reads a bundle; nothing happens for a chart
    that keeps its subcharts in git, or for a bundle that is not a chart."""
    chart_yaml = posixpath.normpath(posixpath.join(chart, "Chart.yaml"))
    if chart_yaml not in resources:
        return
    with tempfile.TemporaryDirectory(prefix="shoal-deps-") as tmp:
        root, work = Path(tmp) / "bundle", Path(tmp) / "work"
        materialize(resources.values(), root)
        work.mkdir()
        chart_dir = root / posixpath.dirname(chart_yaml)
        filled = with_dependencies(chart_dir, work, cache=cache, root=root)
        if filled == chart_dir:
            return
        prefix = posixpath.dirname(chart_yaml)
        for path in sorted((filled / "charts").rglob("*")):
            if path.is_file():
                name = posixpath.join(
                    prefix, "charts", path.relative_to(filled / "charts").as_posix()
                )
                resources.setdefault(name, BundleResource.of_bytes(name, path.read_bytes()))


def _embed(
    helm: HelmOptions, resources: dict[str, BundleResource], cache: ChartCache
) -> HelmOptions:
    """Fetch a remote chart into the bundle; ``helm.chart`` then names its directory there."""
    if not is_remote(helm.chart, helm.repo):
        return helm
    fetched = cache.fetch(helm.chart, repo=helm.repo, version=helm.version)
    digest = fetched.digest.removeprefix("sha256:")[:16]
    directory = f"{CHARTS_DIR}/{digest}"
    for name, data in chart_files(fetched.archive).items():
        path = posixpath.join(directory, name)
        resources[path] = BundleResource.of_bytes(path, data)
    return helm.model_copy(
        update={"chart": directory, "repo": "", "version": fetched.version or helm.version}
    )


def variants(spec: BundleSpec) -> list[tuple[str, DeploymentOptions, dict[str, str]]]:
    """(what, options, labels of a stand-in cluster) for each way the bundle deploys."""
    out: list[tuple[str, DeploymentOptions, dict[str, str]]] = [("", spec.options, {})]
    for index, target in enumerate(spec.targets):
        if target.do_not_deploy:
            continue
        labels: dict[str, str] = {}
        if target.cluster_selector is not None:
            labels = dict(target.cluster_selector.match_labels)
        what = f"targetCustomizations[{index}]" + (f" ({target.name})" if target.name else "")
        out.append((what, spec.options.merged(target), labels))
    return out


def check(spec: BundleSpec, resources: Sequence[BundleResource]) -> list[int]:
    """Render every variant once; how many objects each has (the bundle's own options first)."""
    counts: list[int] = []
    for what, options, labels in variants(spec):
        cluster = ClusterContext(name=_VALIDATION_CLUSTER, labels=labels)
        try:
            objects = _render_leniently(resources, options, spec.name, cluster)
        except BundleError as exc:
            if what:
                raise type(exc)(f"{what}: {exc}", file=exc.file, field=exc.field) from exc
            raise
        counts.append(len(objects))
    return counts


def _render_leniently(
    resources: Sequence[BundleResource],
    options: DeploymentOptions,
    bundle: str,
    cluster: ClusterContext,
) -> tuple[object, ...]:
    try:
        return render_placed(resources, options, bundle=bundle, cluster=cluster)
    except TemplateError as exc:
        if _MISSING_KEY not in str(exc) or options.helm is None:
            raise
    untemplated = options.helm.model_copy(update={"disable_pre_process": True})
    lenient = options.model_copy(update={"helm": untemplated})
    return render_placed(resources, lenient, bundle=bundle, cluster=cluster)


def _located(exc: BundleError, found: DiscoveredBundle) -> BundleError:
    """The error with the bundle's name and directory in front, so the operator finds it."""
    prefix = "" if found.path in ("", ".") else f"{found.path}/"
    file = f"{prefix}{exc.file}" if exc.file else found.path
    message = f"bundle {found.name} ({found.path or '.'}): {exc}"
    return type(exc)(message, file=file, field=exc.field)
