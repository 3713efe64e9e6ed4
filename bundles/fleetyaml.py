"""``fleet.yaml``: Fleet's bundle options file, read as users write it.

A bundle directory may hold a ``fleet.yaml`` (or ``fleet.yml``) that says how
its files are deployed: namespaces, Helm chart and values, Kustomize dir,
YAML overlays, per-cluster ``targetCustomizations``, dependencies, drift
correction. :func:`load_fleet_yaml` reads one into :class:`FleetYaml`, a typed
model of Fleet's schema in Fleet's camelCase spelling; :func:`to_spec` turns
it into the :class:`~protocol.models.BundleSpec` the control plane stores.

Fleet ignores keys it does not know, which lets a typo (``valuesFile``)
silently do nothing. Here an unknown key is a warning naming the file and the
key path, returned to the caller to print; a key of the wrong type, or a file
that is not YAML, is a :class:`~bundles.errors.FleetYamlError` naming the
file, the line when known, and the field.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic.fields import FieldInfo

from bundles.errors import FleetYamlError
from protocol.models import (
    BundleRef,
    BundleSpec,
    BundleTarget,
    DeploymentOptions,
    DiffOptions,
    HelmOptions,
    IgnoreOptions,
    KustomizeOptions,
    YamlOptions,
)
from protocol.selectors import LabelSelector

FLEET_YAML_NAMES = ("fleet.yaml", "fleet.yml")

_M = TypeVar("_M", bound=BaseModel)


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader without the timestamp type.

    Fleet reads YAML through JSON, where ``2024-01-01`` stays a string; so do
    we, so values and manifests keep the type Fleet gives them.
    """


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class CorrectDrift(_Model):
    """``correctDrift``: undo changes made on the cluster; ``force`` recreates what it must."""

    enabled: bool = False
    force: bool = False
    keep_fail_history: bool = Field(default=False, alias="keepFailHistory")


class _Criteria(_Model):
    """Which clusters a target picks (``targetCustomizations`` and ``overrideTargets``)."""

    name: str = ""
    cluster_selector: LabelSelector | None = Field(default=None, alias="clusterSelector")
    cluster_group: str = Field(default="", alias="clusterGroup")
    cluster_group_selector: LabelSelector | None = Field(default=None, alias="clusterGroupSelector")
    cluster_name: str = Field(default="", alias="clusterName")
    do_not_deploy: bool = Field(default=False, alias="doNotDeploy")


class _Deployment(_Model):
    """How a bundle deploys: the fields a ``fleet.yaml`` and a customization both have."""

    default_namespace: str = Field(default="", alias="defaultNamespace")
    namespace: str = ""
    service_account: str = Field(default="", alias="serviceAccount")
    namespace_labels: dict[str, str] = Field(default_factory=dict, alias="namespaceLabels")
    namespace_annotations: dict[str, str] = Field(
        default_factory=dict, alias="namespaceAnnotations"
    )
    helm: HelmOptions | None = None
    kustomize: KustomizeOptions | None = None
    yaml: YamlOptions | None = None
    diff: DiffOptions | None = None
    correct_drift: CorrectDrift | None = Field(default=None, alias="correctDrift")
    keep_resources: bool = Field(default=False, alias="keepResources")
    delete_namespace: bool = Field(default=False, alias="deleteNamespace")
    ignore: IgnoreOptions | None = None


class TargetCustomization(_Criteria, _Deployment):
    """One entry of ``targetCustomizations``: which clusters, and what changes for them.

    ``deleteNamespace`` and ``ignore`` are read but, as in Fleet's merge of a
    customization, only the bundle-level values count.
    """


class OverrideTarget(_Criteria):
    """One entry of ``overrideTargets``: a GitRepo-style target that replaces the source's."""


class FleetYaml(_Deployment):
    """The content of a ``fleet.yaml``, field for field as Fleet defines it.

    ``targets`` (Fleet's inline bundle spec allows it) act as customizations
    placed before ``targetCustomizations``, which is where Fleet puts them.
    """

    name: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    paused: bool = False
    rollout_strategy: dict[str, Any] = Field(default_factory=dict, alias="rolloutStrategy")
    targets: tuple[TargetCustomization, ...] = ()
    target_customizations: tuple[TargetCustomization, ...] = Field(
        default=(), alias="targetCustomizations"
    )
    depends_on: tuple[BundleRef, ...] = Field(default=(), alias="dependsOn")
    override_targets: tuple[OverrideTarget, ...] | None = Field(
        default=None, alias="overrideTargets"
    )

    _file: str = PrivateAttr(default="fleet.yaml")

    @property
    def file(self) -> str:
        """Where this was read from, for messages."""
        return self._file


# Keys Fleet defines that shoal reads but does not act on: a warning says so.
_NOT_SUPPORTED = {
    "imageScans": "image scans are not supported; the key is ignored",
    "forceSyncGeneration": "forceSyncGeneration is not supported; the key is ignored",
    "targetCustomizationMode": "only the first matching targetCustomization applies",
    "downstreamResources": "downstreamResources is not supported; the key is ignored",
    "resources": "resources come from the bundle's files; the key is ignored",
    "targetRestrictions": "target restrictions come from the source's targets; the key is ignored",
}


def load_fleet_yaml(text: str, file: str = "fleet.yaml") -> tuple[FleetYaml, list[str]]:
    """Parse one ``fleet.yaml``; returns the model and warnings (unknown or ignored keys).

    Raises :class:`FleetYamlError` for text that is not YAML, or a key whose
    value has the wrong type.
    """
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise FleetYamlError(f"{file}{where}: invalid YAML: {problem}", file=file) from exc
    finally:
        loader.dispose()
    data = json_keys(data) if data is not None else {}
    if not isinstance(data, dict):
        raise FleetYamlError(
            f"{file}: expected a mapping of fleet.yaml keys, got {type(data).__name__}", file=file
        )
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    warnings: list[str] = []
    cleaned = _clean(FleetYaml, data, (), file, warnings)
    try:
        fleet = FleetYaml.model_validate(cleaned)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        field = _dotted(loc)
        line = _line_of(loc, lines)
        where = f" (line {line})" if line else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        raise FleetYamlError(f"{file}{where}: {field}: {message}", file=file, field=field) from exc
    fleet._file = file
    return fleet, warnings


def json_keys(value: Any) -> Any:
    """``value`` with every map key a string, as Fleet's YAML-through-JSON reading makes it.

    ``80: http`` in Helm values is the key ``"80"`` for Fleet and Helm; keys
    must be strings for the values to travel on the bus too.
    """
    if isinstance(value, dict):
        return {_key_text(k): json_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_keys(item) for item in value]
    return value


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


def to_spec(name: str, fleet: FleetYaml, *, targets: Sequence[BundleTarget] = ()) -> BundleSpec:
    """The bundle a ``fleet.yaml`` describes, deployed to ``targets``.

    ``targets`` are the source's own (a GitRepo's, or ``shoal apply
    --target``); none means every cluster, as a GitRepo without targets
    means Fleet's ``default`` group. ``overrideTargets`` replaces them. They
    become the bundle's restrictions and follow the customizations in its
    target list (see :class:`~protocol.models.BundleSpec`). ``fleet.name``,
    when set, is the bundle's name instead of ``name``.
    """
    customizations = [
        _customization(tc, index)
        for index, tc in enumerate((*fleet.targets, *fleet.target_customizations))
    ]
    everywhere = BundleTarget(name="default", cluster_selector=LabelSelector())
    if fleet.override_targets is not None:
        restrictions = [_override(t) for t in fleet.override_targets]
    elif targets:
        restrictions = list(targets)
    else:
        restrictions = [everywhere]
    # As in Fleet: with no target at all (``overrideTargets: []``), the bundle goes everywhere.
    all_targets = (*customizations, *restrictions) or (everywhere,)
    try:
        return BundleSpec(
            name=fleet.name or name,
            options=_options(fleet),
            targets=all_targets,
            target_restrictions=tuple(restrictions),
            labels=fleet.labels,
            depends_on=fleet.depends_on,
            paused=fleet.paused,
            rollout_strategy=fleet.rollout_strategy,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _dotted(tuple(first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise FleetYamlError(
            f"{fleet.file}: {field}: {message}", file=fleet.file, field=field
        ) from exc


def _options(fleet: FleetYaml) -> DeploymentOptions:
    drift = fleet.correct_drift or CorrectDrift()
    return DeploymentOptions(
        default_namespace=fleet.default_namespace or None,
        namespace=fleet.namespace or None,
        correct_drift=drift.enabled,
        force=drift.force,
        keep_resources=fleet.keep_resources,
        diff=_unless_empty(fleet.diff),
        helm=_unless_empty(fleet.helm),
        kustomize=_unless_empty(fleet.kustomize),
        yaml=_unless_empty(fleet.yaml),
        service_account=fleet.service_account,
        namespace_labels=fleet.namespace_labels,
        namespace_annotations=fleet.namespace_annotations,
        delete_namespace=fleet.delete_namespace,
        ignore=_unless_empty(fleet.ignore),
    )


def _customization(tc: TargetCustomization, index: int) -> BundleTarget:
    drift = tc.correct_drift
    return BundleTarget(
        name=tc.name or f"target{index:03d}",
        cluster_selector=tc.cluster_selector,
        cluster_group=tc.cluster_group,
        cluster_group_selector=tc.cluster_group_selector,
        cluster_name=tc.cluster_name,
        do_not_deploy=tc.do_not_deploy,
        namespace=tc.namespace or None,
        default_namespace=tc.default_namespace or None,
        service_account=tc.service_account or None,
        # Fleet replaces the whole correctDrift object when a customization sets one.
        correct_drift=drift.enabled if drift else None,
        force=drift.force if drift else None,
        keep_resources=True if tc.keep_resources else None,
        helm=_unless_empty(tc.helm),
        kustomize=_unless_empty(tc.kustomize),
        yaml=_unless_empty(tc.yaml),
        diff=_unless_empty(tc.diff),
        namespace_labels=tc.namespace_labels,
        namespace_annotations=tc.namespace_annotations,
    )


def _override(target: OverrideTarget) -> BundleTarget:
    return BundleTarget(
        name=target.name,
        cluster_selector=target.cluster_selector,
        cluster_group=target.cluster_group,
        cluster_group_selector=target.cluster_group_selector,
        cluster_name=target.cluster_name,
        do_not_deploy=target.do_not_deploy,
    )


def _unless_empty(model: _M | None) -> _M | None:
    """``helm: {}`` says nothing more than no ``helm`` at all; both give the same deployment ID."""
    if model is None or not model.model_dump(exclude_defaults=True):
        return None
    return model


# -- unknown keys ------------------------------------------------------------------


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model class, is a sequence of it) for a field's annotation, if it holds models."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _nested_model(arg)
        return None, False
    if origin in (tuple, list):
        inner, _ = _nested_model(typing.get_args(annotation)[0])
        return inner, True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def _clean(
    model: type[BaseModel],
    data: Mapping[Any, Any],
    path: tuple[str | int, ...],
    file: str,
    warnings: list[str],
) -> dict[str, Any]:
    """``data`` with unknown keys dropped (and warned about) and nulls dropped, recursively.

    A null means "not set" in Fleet, as in Go; inside free-form maps such as
    ``helm.values`` nulls are kept, since Helm gives them a meaning.
    Label selectors are left whole: a misspelt selector key is an error there,
    because a selector that silently matches everything is worse than none.
    """
    fields: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        fields[name] = field
        if field.alias:
            fields[field.alias] = field
    out: dict[str, Any] = {}
    for key, raw in data.items():
        here = (*path, str(key))
        info = fields.get(key) if isinstance(key, str) else None
        if info is None:
            if model is FleetYaml and key in _NOT_SUPPORTED:
                warnings.append(f"{file}: {key}: {_NOT_SUPPORTED[key]}")
            else:
                warnings.append(f"{file}: unknown key {_dotted(here)}")
            continue
        if raw is None:
            continue
        value = raw
        nested, many = _nested_model(info.annotation)
        if nested is not None and nested is not LabelSelector:
            if many and isinstance(raw, list):
                value = [
                    _clean(nested, item, (*here, i), file, warnings)
                    if isinstance(item, Mapping)
                    else item
                    for i, item in enumerate(raw)
                ]
            elif not many and isinstance(raw, Mapping):
                value = _clean(nested, raw, here, file, warnings)
        out[key] = value
    return out


def _record_lines(
    node: yaml.Node, path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]
) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                here = (*path, str(key_node.value))
                lines.setdefault(here, key_node.start_mark.line + 1)
                _record_lines(value_node, here, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            here = (*path, index)
            lines.setdefault(here, item.start_mark.line + 1)
            _record_lines(item, here, lines)


def _line_of(loc: tuple[Any, ...], lines: Mapping[tuple[str | int, ...], int]) -> int | None:
    """The line of the deepest part of ``loc`` the file has (pydantic may add a type tag)."""
    for end in range(len(loc), 0, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
