"""Deployment options: how a bundle is deployed on a cluster, as Fleet defines them.

``DeploymentOptions`` is Fleet's ``BundleDeploymentOptions`` (namespaces,
Helm, Kustomize, YAML overlays, drift handling, namespace labels...), in the
camelCase spelling Fleet uses in ``fleet.yaml``. The resolved options of a
cluster are part of its deployment ID, so their wire form leaves defaults out:
an option nobody sets costs nothing and changes no ID. ``TargetOverrides`` is
what a target or ``targetCustomization`` may change, and
:meth:`DeploymentOptions.merged` applies it the way Fleet merges a
customization over the bundle's options.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class ComparePatchOperation(_Model):
    """One JSON-patch operation of a compare patch; ``remove`` is the one Fleet users write."""

    op: str
    path: str
    value: Any = None


class ComparePatch(_Model):
    """Fields of one object that drift detection ignores (Fleet's ``diff.comparePatches``).

    ``operations`` are JSON-patch operations applied to both the applied and
    the live object before they are compared; ``jsonPointers`` name fields
    left out of the comparison.
    """

    api_version: str = Field(default="", alias="apiVersion")
    kind: str = ""
    name: str = ""
    namespace: str = ""
    operations: tuple[ComparePatchOperation, ...] = ()
    json_pointers: tuple[str, ...] = Field(default=(), alias="jsonPointers")

    def key(self) -> tuple[str, str, str, str]:
        return (self.api_version, self.kind, self.namespace, self.name)


class DiffOptions(_Model):
    compare_patches: tuple[ComparePatch, ...] = Field(default=(), alias="comparePatches")

    def merged(self, custom: DiffOptions) -> DiffOptions:
        """Patches of the same object (apiVersion, kind, namespace, name): the custom one wins."""
        return DiffOptions(
            compare_patches=_merge_by_key(self.compare_patches, custom.compare_patches, _patch_key)
        )


def _patch_key(patch: ComparePatch) -> str:
    return "|".join(patch.key())


T = TypeVar("T")


def _merge_by_key(base: Sequence[T], custom: Sequence[T], key: Callable[[T], str]) -> tuple[T, ...]:
    """Base entries in order, each replaced by a custom entry of the same key; new ones appended.

    An entry whose key is empty has no identity and is always appended.
    """
    replacements = {key(item): item for item in custom if key(item)}
    out = [replacements.pop(key(item), item) if key(item) else item for item in base]
    out.extend(item for item in custom if not key(item) or key(item) in replacements)
    return tuple(out)


def merge_values(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Helm values deep-merged: maps merge key by key, anything else in ``overlay`` wins."""
    out = dict(base)
    for key, value in overlay.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = merge_values(current, value)
        else:
            out[key] = value
    return out


class KeyRef(_Model):
    """A key of a ConfigMap or Secret on the downstream cluster holding Helm values."""

    name: str = ""
    namespace: str = ""
    key: str = ""


class ValuesFrom(_Model):
    config_map_key_ref: KeyRef | None = Field(default=None, alias="configMapKeyRef")
    secret_key_ref: KeyRef | None = Field(default=None, alias="secretKeyRef")

    def key(self) -> str:
        for kind, ref in (("configmap", self.config_map_key_ref), ("secret", self.secret_key_ref)):
            if ref is not None:
                return f"{kind}|{ref.namespace}|{ref.name}|{ref.key}"
        return ""


_RELEASE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
MAX_RELEASE_NAME = 53


class HelmOptions(_Model):
    """Fleet's ``helm`` options: which chart, which values, and how Helm installs it.

    ``values`` are the values as written (templates not yet evaluated: that
    happens per cluster, see ``bundles.templating``); ``valuesFiles`` have
    been merged into ``values`` by the time a bundle is applied.
    """

    chart: str = ""
    repo: str = ""
    version: str = ""
    release_name: str = Field(default="", alias="releaseName")
    values: dict[str, Any] = Field(default_factory=dict)
    values_files: tuple[str, ...] = Field(default=(), alias="valuesFiles")
    values_from: tuple[ValuesFrom, ...] = Field(default=(), alias="valuesFrom")
    take_ownership: bool = Field(default=False, alias="takeOwnership")
    force: bool = False
    atomic: bool = False
    timeout_seconds: int = Field(default=0, alias="timeoutSeconds")
    max_history: int = Field(default=0, alias="maxHistory")
    wait_for_jobs: bool = Field(default=False, alias="waitForJobs")
    disable_pre_process: bool = Field(default=False, alias="disablePreProcess")
    disable_dns: bool = Field(default=False, alias="disableDNS")
    skip_schema_validation: bool = Field(default=False, alias="skipSchemaValidation")
    disable_dependency_update: bool = Field(default=False, alias="disableDependencyUpdate")
    template_values: dict[str, str] = Field(default_factory=dict, alias="templateValues")

    @field_validator("release_name")
    @classmethod
    def _valid_release_name(cls, value: str) -> str:
        if value and (len(value) > MAX_RELEASE_NAME or not _RELEASE_NAME_RE.match(value)):
            raise ValueError(
                f"invalid Helm release name {value!r}: want at most {MAX_RELEASE_NAME} lowercase "
                "letters, digits, '-' or '.', starting and ending with a letter or digit"
            )
        return value

    def merged(self, custom: HelmOptions) -> HelmOptions:
        """Fleet's merge of a customization's ``helm`` over the bundle's.

        Values are deep-merged (the customization wins), ``templateValues``
        and ``valuesFrom`` merged by key; strings and numbers are replaced
        when the customization sets them (a negative ``timeoutSeconds``
        resets it to 0); a flag is on when either side turns it on.
        """
        timeout = self.timeout_seconds
        if custom.timeout_seconds > 0:
            timeout = custom.timeout_seconds
        elif custom.timeout_seconds < 0:
            timeout = 0
        flags = (
            "take_ownership",
            "force",
            "atomic",
            "wait_for_jobs",
            "disable_pre_process",
            "disable_dns",
            "skip_schema_validation",
            "disable_dependency_update",
        )
        update: dict[str, Any] = {
            name: getattr(self, name) or getattr(custom, name) for name in flags
        }
        for name in ("chart", "repo", "version", "release_name", "max_history"):
            if getattr(custom, name):
                update[name] = getattr(custom, name)
        if custom.values_files:
            update["values_files"] = custom.values_files
        update["timeout_seconds"] = timeout
        update["values"] = merge_values(self.values, custom.values)
        update["template_values"] = {**self.template_values, **custom.template_values}
        update["values_from"] = _merge_by_key(self.values_from, custom.values_from, ValuesFrom.key)
        return self.model_copy(update=update)


class KustomizeOptions(_Model):
    """Fleet's ``kustomize.dir``: the directory holding the kustomization.yaml to build."""

    dir: str = ""


class YamlOptions(_Model):
    """Fleet's ``yaml.overlays``: names of ``overlays/<name>/`` directories, applied in order."""

    overlays: tuple[str, ...] = ()


class IgnoreOptions(_Model):
    """Resource conditions left out of readiness (each a map such as ``{type: Ready}``)."""

    conditions: tuple[dict[str, str], ...] = ()


class DeploymentOptions(_Model):
    """How a bundle is deployed on a cluster; part of the deployment ID.

    Defaults are left out of the wire form, so an option that stays at its
    default costs no bytes and does not change IDs when new options are added.
    The field order is part of the ID too: new fields go at the end.
    """

    default_namespace: str | None = Field(default=None, alias="defaultNamespace")
    namespace: str | None = None
    correct_drift: bool = Field(default=False, alias="correctDrift")
    force: bool = False
    keep_resources: bool = Field(default=False, alias="keepResources")
    diff: DiffOptions | None = None
    helm: HelmOptions | None = None
    kustomize: KustomizeOptions | None = None
    yaml: YamlOptions | None = None
    service_account: str = Field(default="", alias="serviceAccount")
    namespace_labels: dict[str, str] = Field(default_factory=dict, alias="namespaceLabels")
    namespace_annotations: dict[str, str] = Field(
        default_factory=dict, alias="namespaceAnnotations"
    )
    delete_namespace: bool = Field(default=False, alias="deleteNamespace")
    ignore: IgnoreOptions | None = None

    def merged(self, override: TargetOverrides) -> DeploymentOptions:
        """These options with a target's overrides applied, as Fleet merges a customization.

        Scalars the override sets replace; ``helm`` merges field by field
        (see :meth:`HelmOptions.merged`); ``kustomize.dir`` replaces when set;
        ``yaml.overlays`` are appended to the bundle's; compare patches, namespace
        labels and annotations merge by key.
        """
        update: dict[str, Any] = {}
        for name in (
            "namespace",
            "default_namespace",
            "correct_drift",
            "force",
            "keep_resources",
            "service_account",
        ):
            value = getattr(override, name)
            if value is not None:
                update[name] = value
        if override.helm is not None:
            update["helm"] = (self.helm or HelmOptions()).merged(override.helm)
        if override.kustomize is not None and override.kustomize.dir:
            update["kustomize"] = override.kustomize
        if override.yaml is not None and override.yaml.overlays:
            base = self.yaml.overlays if self.yaml else ()
            update["yaml"] = YamlOptions(overlays=base + override.yaml.overlays)
        if override.diff is not None:
            update["diff"] = (self.diff or DiffOptions()).merged(override.diff)
        if override.namespace_labels:
            update["namespace_labels"] = {**self.namespace_labels, **override.namespace_labels}
        if override.namespace_annotations:
            update["namespace_annotations"] = {
                **self.namespace_annotations,
                **override.namespace_annotations,
            }
        return self.model_copy(update=update) if update else self


class TargetOverrides(_Model):
    """What a target may change about the bundle's options for the clusters it matches.

    ``None`` (or empty) means "leave the bundle's value alone".
    """

    namespace: str | None = None
    default_namespace: str | None = Field(default=None, alias="defaultNamespace")
    correct_drift: bool | None = Field(default=None, alias="correctDrift")
    force: bool | None = None
    keep_resources: bool | None = Field(default=None, alias="keepResources")
    do_not_deploy: bool = Field(default=False, alias="doNotDeploy")
    service_account: str | None = Field(default=None, alias="serviceAccount")
    helm: HelmOptions | None = None
    kustomize: KustomizeOptions | None = None
    yaml: YamlOptions | None = None
    diff: DiffOptions | None = None
    namespace_labels: dict[str, str] = Field(default_factory=dict, alias="namespaceLabels")
    namespace_annotations: dict[str, str] = Field(
        default_factory=dict, alias="namespaceAnnotations"
    )
