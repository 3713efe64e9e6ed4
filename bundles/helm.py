"""Helm: a chart plus values -> the Kubernetes objects of its release, rendered client-side.

Fleet deploys a chart with ``helm install``/``upgrade`` and, for ``fleet test``
and its resource lists, renders it with an install in client-only dry-run
mode. shoal renders the same way and applies the objects itself, so what this
module returns mirrors Helm's release:

- ``objects``: the release manifest, in Helm's install order: templates of the
  chart and of its subcharts in ``charts/``, with ``values.yaml`` defaults
  coalesced with the given values. This is what ``fleet test`` prints (Fleet
  adds only its own bookkeeping labels) and what Fleet tracks as the bundle's
  resources. Helm adds no labels of its own here (``app.kubernetes.io/managed-by``
  comes from chart templates, if at all) and leaves namespaces as the
  templates wrote them: placing objects in a namespace is a later step;
- ``crds``: the files in ``crds/`` of the chart and its subcharts, which
  ``helm install`` creates before anything else and ``fleet test`` does not
  print;
- ``hooks``: templates annotated ``helm.sh/hook``, which ``helm install`` runs
  around the install and which are not part of the release's objects;
- ``notes``: the rendered ``NOTES.txt``, never an object.

Two engines, one result. The Helm v4 Go SDK through ``helm_python`` (ctypes,
no binary needed) is preferred; a ``helm`` binary on ``PATH`` (``helm
template``) is the fall-back. The choice is made once per process, and
``SHOAL_HELM=sdk|binary`` forces one (``SHOAL_HELM_BINARY`` names the binary).
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from bundles.engines import EngineTimeout, find_executable, load_documents, run
from bundles.errors import ChartNotFound, HelmError
from protocol.manifests import ManifestError, ParsedObject, parse_resource
from protocol.models import BundleResource

DEFAULT_TIMEOUT = 60.0
"""Seconds a ``helm template`` run may take (the binary engine; the SDK renders in-process)."""

HOOK_ANNOTATION = "helm.sh/hook"

_SOURCE_RE = re.compile(r"^# Source: (.+?)\s*$", re.MULTILINE)
_DOC_SEPARATOR_RE = re.compile(r"^---[ \t]*$", re.MULTILINE)
# "mychart/crds/x.yaml", "mychart/charts/sub/crds/x.yaml"
_CRD_SOURCE_RE = re.compile(r"^[^/]+(?:/charts/[^/]+)*/crds/")


@dataclass(frozen=True)
class RenderedChart:
    """A rendered release; see the module docstring for what each part holds."""

    objects: tuple[ParsedObject, ...]
    crds: tuple[ParsedObject, ...]
    hooks: tuple[ParsedObject, ...]
    notes: str
    engine: str

    def object_dicts(self) -> list[dict[str, Any]]:
        return [item.obj for item in self.objects]


@dataclass(frozen=True)
class Rendered:
    """What an engine hands back: Helm's text, before shoal parses it."""

    manifest: str
    """The release manifest, documents headed by ``# Source:`` comments."""
    crds: tuple[tuple[str, str], ...]
    """(file, YAML) of each file under ``crds/``."""
    hooks: str
    """Hook documents headed by ``# Source:`` comments, like the manifest."""
    notes: str


class HelmEngine(Protocol):
    """One way of running Helm; both engines render like ``helm install --dry-run=client``."""

    name: str

    def render(
        self,
        chart: Path,
        *,
        release_name: str,
        namespace: str,
        values: Mapping[str, Any],
        kube_version: str | None,
        api_versions: Sequence[str],
        skip_schema_validation: bool,
        timeout: float,
    ) -> Rendered: ...


def merge_values(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Layers of values merged like ``helm -f a -f b``: maps merge, anything else is replaced.

    A ``null`` in a later layer is kept: Helm reads it as "delete this key from
    the chart's defaults".
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        _merge_into(merged, layer)
    return merged


def _merge_into(dest: dict[str, Any], src: Mapping[str, Any]) -> None:
    for key, value in src.items():
        current = dest.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            _merge_into(current, value)
        else:
            dest[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)


def read_values_file(path: Path) -> dict[str, Any]:
    """One values file (``helm -f``): a YAML mapping, or empty. HelmError names the file."""
    try:
        documents = load_documents(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HelmError(f"values file {path}: {exc.strerror or exc}", file=str(path)) from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise HelmError(f"values file {path} is not valid YAML: {exc}", file=str(path)) from exc
    if not documents:
        return {}
    if len(documents) > 1 or not isinstance(documents[0], dict):
        raise HelmError(
            f"values file {path} must hold one YAML mapping (key: value)", file=str(path)
        )
    return documents[0]


def render_chart(
    chart: Path,
    /,
    *,
    release_name: str,
    namespace: str,
    values: Mapping[str, Any] | None = None,
    values_files: Sequence[Path] = (),
    kube_version: str | None = None,
    api_versions: Sequence[str] = (),
    skip_schema_validation: bool = False,
    engine: HelmEngine | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> RenderedChart:
    """Render ``chart`` (a directory or ``.tgz``) as release ``release_name`` in ``namespace``.

    ``values_files`` are merged in order, then ``values`` over them; the
    chart's own ``values.yaml`` is beneath all of them. ``kube_version``
    (``"v1.30.0"``) and ``api_versions`` (``"monitoring.coreos.com/v1"``) are
    what templates see in ``.Capabilities``; leave them out and Helm's
    defaults apply.

    Raises :class:`ChartNotFound` when ``chart`` is not there and
    :class:`HelmError` with Helm's own message (which names the template)
    when Helm refuses the chart, its values or its templates.
    """
    if not (chart.is_dir() or chart.is_file()):
        raise ChartNotFound(f"chart {chart}: no such directory or archive", file=str(chart))
    layers = [read_values_file(path) for path in values_files]
    merged = merge_values(*layers, values or {})
    helm = engine or default_engine()
    rendered = helm.render(
        chart,
        release_name=release_name,
        namespace=namespace,
        values=merged,
        kube_version=kube_version,
        api_versions=tuple(api_versions),
        skip_schema_validation=skip_schema_validation,
        timeout=timeout,
    )
    objects = _parse_sources(rendered.manifest, chart, strict=True)
    hooks = tuple(
        item for item in _parse_sources(rendered.hooks, chart, strict=False) if _is_hook(item.obj)
    )
    crds = tuple(
        item for file, text in rendered.crds for item in _parse(file, text, chart, strict=False)
    )
    return RenderedChart(objects, crds, hooks, rendered.notes, helm.name)


def _is_hook(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return isinstance(annotations, dict) and HOOK_ANNOTATION in annotations


def split_sources(text: str) -> list[tuple[str, str]]:
    """Helm's output as (template file, YAML) pairs, consecutive documents of a file joined.

    Helm heads each document with ``# Source: <template>``; a document without
    one belongs to the template named last.
    """
    pairs: list[tuple[str, str]] = []
    for document in _DOC_SEPARATOR_RE.split(text):
        if not document.strip():
            continue
        match = _SOURCE_RE.search(document)
        source = match.group(1) if match else (pairs[-1][0] if pairs else "")
        if pairs and pairs[-1][0] == source:
            pairs[-1] = (source, f"{pairs[-1][1]}---\n{document}")
        else:
            pairs.append((source, document))
    return pairs


def _parse_sources(text: str, chart: Path, *, strict: bool) -> tuple[ParsedObject, ...]:
    return tuple(
        item
        for source, body in split_sources(text)
        for item in _parse(source, body, chart, strict=strict)
    )


def _parse(source: str, text: str, chart: Path, *, strict: bool) -> list[ParsedObject]:
    """Objects of one template's output; strictly checked for objects shoal applies by name."""
    name = source or str(chart)
    if strict:
        try:
            return parse_resource(BundleResource(name=name, content=text))
        except ManifestError as exc:
            raise HelmError(
                f"chart {chart}: template {name} renders an invalid object: {exc.reason}"
                + (f" (document {exc.document})" if exc.document else ""),
                file=name,
            ) from exc
    try:
        documents = load_documents(text)
    except yaml.YAMLError as exc:
        raise HelmError(f"chart {chart}: {name} is not valid YAML: {exc}", file=name) from exc
    return [
        ParsedObject(name, index, doc)
        for index, doc in enumerate(documents, start=1)
        if isinstance(doc, dict)
    ]


def _values_json(values: Mapping[str, Any]) -> str:
    # YAML dates and times reach Helm as the strings they were written as.
    def default(value: object) -> str:
        if isinstance(value, datetime.date | datetime.datetime | datetime.time):
            return value.isoformat()
        raise TypeError(f"value of type {type(value).__name__} cannot be passed to Helm")

    try:
        return json.dumps(values, default=default)
    except (TypeError, ValueError) as exc:
        raise HelmError(f"helm values: {exc}", field="helm.values") from exc


class SdkHelm:
    """Helm's Go SDK in-process, through ``helm_python``.

    Rendering is ``Install`` with ``dry_run="client"`` (Fleet's own template
    path: client-only, nothing stored, no cluster contacted) for the
    manifest and notes, the SDK's offline ``render`` for hook templates, and
    the chart's ``crds/`` files as loaded. ``kube_version``, ``api_versions``
    and ``skip_schema_validation`` are options of the library's C ABI that
    helm-python 0.2 does not surface as keyword arguments, so the install
    and render calls go through its ``_native`` layer (the version is pinned
    below 0.3 in pyproject.toml; the tests check those options take effect).
    """

    name = "sdk"

    def __init__(self) -> None:
        try:
            import helm_python  # noqa: PLC0415 (loads an 80 MB library: only when chosen)
            from helm_python import _native  # noqa: PLC0415
        except (ImportError, OSError) as exc:
            raise HelmError(f"the Helm SDK (helm_python) cannot be loaded: {exc}") from exc
        self._helm = helm_python
        self._native = _native

    def render(
        self,
        chart: Path,
        *,
        release_name: str,
        namespace: str,
        values: Mapping[str, Any],
        kube_version: str | None,
        api_versions: Sequence[str],
        skip_schema_validation: bool,
        timeout: float,
    ) -> Rendered:
        helm, native = self._helm, self._native
        capabilities: dict[str, Any] = {}
        if kube_version:
            capabilities["kube_version"] = kube_version
        if api_versions:
            capabilities["api_versions"] = list(api_versions)
        values_json = _values_json(values)
        try:
            with (
                helm.Chart.load(os.fspath(chart)) as loaded,
                helm.Config(namespace=namespace, storage_driver="memory") as config,
            ):
                install_options = {
                    "dry_run": "client",
                    "namespace": namespace,
                    **capabilities,
                    **({"skip_schema_validation": True} if skip_schema_validation else {}),
                }
                release = json.loads(
                    native.call_string(
                        "helm_install",
                        config._raw(),
                        native.HANDLE(0),
                        loaded._raw(),
                        None,
                        release_name,
                        values_json,
                        json.dumps(install_options),
                    )
                )
                templates: dict[str, str] = json.loads(
                    native.call_string(
                        "helm_render",
                        loaded._raw(),
                        values_json,
                        json.dumps(
                            {
                                "name": release_name,
                                "namespace": namespace,
                                "is_install": True,
                                **capabilities,
                            }
                        ),
                    )
                )
                crds = tuple((c["filename"], c["data"]) for c in loaded.crds)
        except helm.HelmError as exc:
            raise HelmError(f"helm template {chart}: {exc}", file=os.fspath(chart)) from exc
        hooks = "".join(
            f"---\n# Source: {name}\n{text}\n"
            for name, text in sorted(templates.items())
            if not name.endswith("NOTES.txt") and HOOK_ANNOTATION in text
        )
        return Rendered(
            manifest=str(release.get("manifest") or ""),
            crds=crds,
            hooks=hooks,
            notes=str(release.get("notes") or ""),
        )


class BinaryHelm:
    """A ``helm`` binary: ``helm template --include-crds``, its output sorted into parts."""

    name = "binary"

    def __init__(self, program: Path) -> None:
        self.program = program

    def render(
        self,
        chart: Path,
        *,
        release_name: str,
        namespace: str,
        values: Mapping[str, Any],
        kube_version: str | None,
        api_versions: Sequence[str],
        skip_schema_validation: bool,
        timeout: float,
    ) -> Rendered:
        with tempfile.TemporaryDirectory(prefix="shoal-helm-") as tmp:
            values_path = Path(tmp) / "values.json"
            values_path.write_text(_values_json(values), encoding="utf-8")
            argv: list[str | Path] = [
                self.program,
                "template",
                release_name,
                chart,
                "--namespace",
                namespace,
                "--values",
                values_path,
                "--include-crds",
            ]
            if kube_version:
                argv += ["--kube-version", kube_version]
            for api_version in api_versions:
                argv += ["--api-versions", api_version]
            if skip_schema_validation:
                argv.append("--skip-schema-validation")
            try:
                done = run(argv, timeout=timeout, env={**os.environ, "HELM_NO_PLUGINS": "1"})
            except (EngineTimeout, OSError) as exc:
                raise HelmError(f"helm template {chart}: {exc}", file=os.fspath(chart)) from exc
        if done.returncode != 0:
            message = done.stderr.strip().removeprefix("Error: ") or f"exit {done.returncode}"
            raise HelmError(f"helm template {chart}: {message}", file=os.fspath(chart))
        manifest: list[str] = []
        hooks: list[str] = []
        crds: list[tuple[str, str]] = []
        for source, text in split_sources(done.stdout):
            if _CRD_SOURCE_RE.match(source):
                crds.append((source, text))
            elif HOOK_ANNOTATION in text and any(
                _is_hook(doc) for doc in load_documents(text) if isinstance(doc, dict)
            ):
                hooks.append(f"---\n{text}")
            else:
                manifest.append(f"---\n{text}")
        return Rendered("".join(manifest), tuple(crds), "".join(hooks), notes="")


@functools.cache
def _engine_for(choice: str) -> HelmEngine:
    if choice not in ("", "auto", "sdk", "binary"):
        raise HelmError(f"SHOAL_HELM={choice!r}: want 'sdk', 'binary' or 'auto'")
    sdk_error: HelmError | None = None
    if choice in ("", "auto", "sdk"):
        try:
            return SdkHelm()
        except HelmError as exc:
            if choice == "sdk":
                raise
            sdk_error = exc
    try:
        program = find_executable("helm", env_var="SHOAL_HELM_BINARY")
    except FileNotFoundError as exc:
        raise HelmError(str(exc)) from exc
    if program is None:
        reason = f" ({sdk_error})" if sdk_error else ""
        raise HelmError(f"no Helm engine: helm_python is not usable{reason} and no helm binary")
    return BinaryHelm(program)


def default_engine() -> HelmEngine:
    """The engine this process uses: the SDK, else a ``helm`` binary (``SHOAL_HELM`` forces one)."""
    return _engine_for(os.environ.get("SHOAL_HELM", "auto").strip().lower())
