"""One bundle, one cluster: the Kubernetes objects it should hold.

A bundle is one of three kinds, decided the way Fleet decides it:

* **Helm** when ``helm.chart`` names a chart, or the bundle has a
  ``Chart.yaml`` at its root: Helm's own engine renders the chart with the
  values as they are for this cluster (``${ }`` templates evaluated,
  ``global.fleet.clusterLabels.*`` substituted: :mod:`bundles.templating`).
  A chart fetched from a URL, a repository or OCI travels inside the bundle
  (``shoal apply`` and the git poller put it there), so an agent never
  needs the internet.
* **Kustomize** when ``<kustomize.dir>/kustomization.yaml`` (``.`` by
  default) exists: ``kustomize build`` of that directory.
* **Manifests** otherwise: every raw YAML file, after the ``yaml.overlays``
  chosen for this cluster (:mod:`bundles.overlays`).

Then namespaces are placed as Fleet places them (:func:`place`). The agent
calls :func:`render` for its own cluster; the control plane and ``shoal
target`` call it for previews and to reject a broken bundle before any
cluster sees it. Helm and Kustomize read files, so those kinds are written to
a temporary directory for the engine.
"""

from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from bundles import helm, kustomize
from bundles.discovery import determine_style
from bundles.errors import BundleError
from bundles.overlays import apply_overlays, raw_manifests
from bundles.templating import ClusterContext, render_helm
from protocol.manifests import ManifestError, ParsedObject, check_object, parse_resources
from protocol.models import BundleResource, DeploymentOptions

DEFAULT_NAMESPACE = "default"
MAX_RELEASE_NAME = 53

CLUSTER_SCOPED_KINDS: frozenset[str] = frozenset(
    {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "APIService",
        "IngressClass",
        "RuntimeClass",
        "CSIDriver",
    }
)

HELM, KUSTOMIZE, MANIFESTS = "helm", "kustomize", "manifests"


def kind_of(resources: Iterable[BundleResource], options: DeploymentOptions) -> str:
    """Which engine renders this bundle: ``helm``, ``kustomize`` or ``manifests``.

    The same decision discovery makes (:func:`bundles.discovery.determine_style`).
    """
    return determine_style([r.name for r in resources], options).kind


def render(
    resources: Sequence[BundleResource],
    options: DeploymentOptions,
    *,
    bundle: str,
    cluster: ClusterContext,
    kube_version: str | None = None,
    api_versions: Sequence[str] = (),
) -> tuple[ParsedObject, ...]:
    """The bundle's objects for ``cluster``, before namespaces are placed.

    ``kube_version`` and ``api_versions`` are the cluster's, for Helm's
    ``.Capabilities`` (left out: Helm's defaults).

    Raises :class:`BundleError` (a subclass) naming the file and the cause.
    """
    kind = kind_of(resources, options)
    if kind == MANIFESTS:
        overlays = options.yaml.overlays if options.yaml is not None else ()
        files = apply_overlays(resources, overlays)
        try:
            return tuple(parse_resources(raw_manifests(files)))
        except ManifestError as exc:
            raise BundleError(str(exc), file=exc.file) from exc
    with tempfile.TemporaryDirectory(prefix="shoal-render-") as tmp:
        root = Path(tmp)
        materialize(resources, root)
        try:
            if kind == HELM:
                return _render_helm(
                    root,
                    options,
                    bundle=bundle,
                    cluster=cluster,
                    kube=kube_version,
                    api_versions=api_versions,
                )
            return _render_kustomize(root, options)
        except BundleError as exc:
            raise _relative(exc, root) from exc


def render_placed(
    resources: Sequence[BundleResource],
    options: DeploymentOptions,
    *,
    bundle: str,
    cluster: ClusterContext,
    kube_version: str | None = None,
    api_versions: Sequence[str] = (),
) -> tuple[dict[str, Any], ...]:
    """:func:`render` then :func:`place`: exactly what goes to the cluster."""
    parsed = render(
        resources,
        options,
        bundle=bundle,
        cluster=cluster,
        kube_version=kube_version,
        api_versions=api_versions,
    )
    return place(parsed, options)


def materialize(resources: Iterable[BundleResource], root: Path) -> None:
    """Write the bundle's files under ``root``; a path leaving ``root`` is refused."""
    for resource in resources:
        target = root / _inside(resource.name, field="resources")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(resource.data())


def release_name(bundle: str, options: DeploymentOptions) -> str:
    """``helm.releaseName``, else the bundle's name cut to Helm's 53 characters."""
    if options.helm is not None and options.helm.release_name:
        return options.helm.release_name
    return bundle[:MAX_RELEASE_NAME].rstrip("-.")


def target_namespace(options: DeploymentOptions) -> str:
    return options.namespace or options.default_namespace or DEFAULT_NAMESPACE


def _render_helm(
    root: Path,
    options: DeploymentOptions,
    *,
    bundle: str,
    cluster: ClusterContext,
    kube: str | None,
    api_versions: Sequence[str] = (),
) -> tuple[ParsedObject, ...]:
    options_helm = options.helm
    chart = root
    values: dict[str, Any] = {}
    skip_schema = False
    if options_helm is not None:
        if options_helm.chart:
            chart = root / _inside(options_helm.chart, field="helm.chart")
        values = render_helm(options_helm, cluster).values
        skip_schema = options_helm.skip_schema_validation
    rendered = helm.render_chart(
        chart,
        release_name=release_name(bundle, options),
        namespace=target_namespace(options),
        values=values,
        kube_version=kube,
        api_versions=api_versions,
        skip_schema_validation=skip_schema,
    )
    return (*rendered.crds, *rendered.objects)


def _render_kustomize(root: Path, options: DeploymentOptions) -> tuple[ParsedObject, ...]:
    directory = _kustomize_dir(options)
    objects = kustomize.build(root / _inside(directory, field="kustomize.dir"))
    out: list[ParsedObject] = []
    where = _join(directory, "kustomization.yaml")
    for index, obj in enumerate(objects, start=1):
        try:
            out.append(ParsedObject(where, index, check_object(obj, file=where, document=index)))
        except ManifestError as exc:
            raise BundleError(str(exc), file=where, field="kustomize.dir") from exc
    return tuple(out)


def place(parsed: Iterable[ParsedObject], options: DeploymentOptions) -> tuple[dict[str, Any], ...]:
    """Copies of the objects with their namespaces placed as Fleet places them.

    ``namespace`` forces the namespace of every namespaced object;
    ``defaultNamespace`` (else ``default``) fills in objects that name none;
    cluster-scoped kinds are left alone.
    """
    objects: list[dict[str, Any]] = []
    for item in parsed:
        obj = _json_copy(item.obj)
        meta = obj["metadata"]
        namespace = meta.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise BundleError(
                f"{item.file} (document {item.document}): metadata.namespace must be a string",
                file=item.file,
                field="metadata.namespace",
            )
        if obj["kind"] not in CLUSTER_SCOPED_KINDS:
            if options.namespace:
                meta["namespace"] = options.namespace
            elif not namespace:
                meta["namespace"] = options.default_namespace or DEFAULT_NAMESPACE
        objects.append(obj)
    return tuple(objects)


def _json_copy(value: Any) -> Any:
    """A copy of a parsed manifest's maps and lists; their scalars are immutable and shared.

    Several times faster than ``copy.deepcopy``, which a fleet pays for every
    object of every deployment it renders.
    """
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    return value


def _relative(exc: BundleError, root: Path) -> BundleError:
    """The engine's error with the scratch directory left out: paths as in the bundle."""

    def strip(text: str) -> str:
        return text.replace(f"{root}/", "").replace(str(root), ".")

    return type(exc)(strip(str(exc)), file=strip(exc.file), field=exc.field)


def _kustomize_dir(options: DeploymentOptions) -> str:
    if options.kustomize is not None and options.kustomize.dir:
        return options.kustomize.dir
    return "."


def _join(directory: str, name: str) -> str:
    return posixpath.normpath(posixpath.join(directory, name))


def _inside(path: str, *, field: str) -> PurePosixPath:
    """A relative path that stays inside the bundle, or a BundleError naming ``field``."""
    pure = PurePosixPath(posixpath.normpath(path or "."))
    if pure.is_absolute() or (pure.parts and pure.parts[0] == ".."):
        raise BundleError(f"{field}: {path!r} leaves the bundle directory", field=field)
    return pure
