"""The objects shoal manages: clusters, cluster groups, bundles and their targets.

These mirror Rancher Fleet's API (``Cluster``, ``ClusterGroup``, ``Bundle``,
``BundleTarget``) closely enough that a Fleet user recognises every field, in
the camelCase spelling Fleet uses when read from YAML or JSON. Target
evaluation lives here because both sides need it: the control plane evaluates
targets once per label class, and tests check the same function against
individual clusters.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.errors import InvalidNameError
from protocol.selectors import LabelSelector, validate_labels

_BUNDLE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_CLUSTER_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")


def validate_bundle_name(name: str) -> str:
    """Bundle names are DNS labels: they become one token of a NATS subject."""
    if not _BUNDLE_NAME_RE.match(name):
        raise InvalidNameError(
            f"invalid bundle name {name!r}: want 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit",
            field="name",
            value=name,
        )
    return name


def validate_cluster_name(name: str) -> str:
    if not _CLUSTER_NAME_RE.match(name):
        raise InvalidNameError(
            f"invalid cluster name {name!r}: want a DNS name of lowercase letters, digits, "
            "'-' and '.'",
            field="name",
            value=name,
        )
    return name


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class Cluster(_Model):
    """A registered downstream cluster."""

    id: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_labels(value)


class ClusterGroup(_Model):
    """A named selector over clusters, with labels of its own.

    ``clusterGroup`` targets pick a group by name; ``clusterGroupSelector``
    targets pick groups by the group's own labels.
    """

    name: str
    selector: LabelSelector = Field(default_factory=LabelSelector)
    labels: dict[str, str] = Field(default_factory=dict)

    def contains(self, cluster_labels: Mapping[str, str]) -> bool:
        return self.selector.matches(cluster_labels)


RESOURCE_ENCODINGS = ("", "base64")


class BundleResource(_Model):
    """One file of a bundle, as read from the source.

    Text files travel as they are (``encoding`` empty); a file that is not
    UTF-8, such as a packaged chart under ``charts/*.tgz``, travels as base64
    with ``encoding="base64"``. The empty default keeps the manifest ID of a
    text-only bundle what it was before binary files were possible.
    """

    name: str
    content: str
    encoding: str = ""

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        if value not in RESOURCE_ENCODINGS:
            raise ValueError(f"unknown resource encoding {value!r} (known: '', 'base64')")
        return value

    def data(self) -> bytes:
        """The file's bytes, whichever way it travels."""
        if self.encoding == "base64":
            return base64.b64decode(self.content)
        return self.content.encode("utf-8")


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


class BundleTarget(TargetOverrides):
    """Which clusters a bundle goes to, and per-target customisation.

    A criterion left out (``None`` or ``""``) is dropped; every criterion given
    must match. A target with no criterion at all matches no cluster; an empty
    ``clusterSelector: {}`` matches every cluster.
    """

    name: str = ""
    cluster_selector: LabelSelector | None = Field(default=None, alias="clusterSelector")
    cluster_name: str = Field(default="", alias="clusterName")
    cluster_group: str = Field(default="", alias="clusterGroup")
    cluster_group_selector: LabelSelector | None = Field(default=None, alias="clusterGroupSelector")

    def has_criteria(self) -> bool:
        return bool(
            self.cluster_selector is not None
            or self.cluster_name
            or self.cluster_group
            or self.cluster_group_selector is not None
        )

    def matches(
        self,
        *,
        cluster_name: str | None,
        labels: Mapping[str, str],
        groups: Mapping[str, ClusterGroup],
    ) -> bool:
        """Whether a cluster matches; ``cluster_name=None`` means "any cluster of a class"."""
        if not self.has_criteria():
            return False
        if self.cluster_name and self.cluster_name != cluster_name:
            return False
        if self.cluster_group:
            group = groups.get(self.cluster_group)
            if group is None or not group.contains(labels):
                return False
        if self.cluster_group_selector is not None:
            selector = self.cluster_group_selector
            if not any(selector.matches(g.labels) and g.contains(labels) for g in groups.values()):
                return False
        return self.cluster_selector is None or self.cluster_selector.matches(labels)

    def selectors(self, groups: Mapping[str, ClusterGroup]) -> list[LabelSelector]:
        """Every selector over cluster labels this target reads, through groups too."""
        out: list[LabelSelector] = []
        if self.cluster_selector is not None:
            out.append(self.cluster_selector)
        if self.cluster_group and self.cluster_group in groups:
            out.append(groups[self.cluster_group].selector)
        if self.cluster_group_selector is not None:
            out.extend(g.selector for g in groups.values())
        return out


class BundleRef(_Model):
    """A bundle this one depends on (Fleet's ``dependsOn``): by name, or by the bundles' labels."""

    name: str = ""
    selector: LabelSelector | None = None


class BundleSpec(_Model):
    """A bundle as the operator declares it; resources travel separately as a blob.

    Targeting follows Fleet. ``targets`` are evaluated in order and the first
    match gives the cluster its options; a bundle read from a ``fleet.yaml``
    lists its ``targetCustomizations`` first, then the targets of the source
    (the GitRepo's, ``shoal apply --target``, or ``overrideTargets``). Those
    source targets are also ``target_restrictions``: when there are any, a
    cluster gets the bundle only if it matches one of them, so a customization
    tailors clusters but never adds one. Without restrictions (a spec written
    directly) every target both selects and customizes, and a spec with no
    targets goes nowhere.

    ``labels``, ``depends_on``, ``paused`` and ``rollout_strategy`` are kept
    as Fleet defines them; they do not change which clusters match.
    """

    name: str
    options: DeploymentOptions = Field(default_factory=DeploymentOptions)
    targets: tuple[BundleTarget, ...] = ()
    target_restrictions: tuple[BundleTarget, ...] = Field(default=(), alias="targetRestrictions")
    labels: dict[str, str] = Field(default_factory=dict)
    depends_on: tuple[BundleRef, ...] = Field(default=(), alias="dependsOn")
    paused: bool = False
    rollout_strategy: dict[str, Any] = Field(default_factory=dict, alias="rolloutStrategy")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return validate_bundle_name(value)

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_labels(value)

    def resolve(
        self,
        *,
        cluster_name: str | None,
        labels: Mapping[str, str],
        groups: Mapping[str, ClusterGroup],
    ) -> DeploymentOptions | None:
        """Options for a cluster, or ``None`` if the bundle does not go there.

        A cluster that matches no restriction (when there are any) is left
        out; otherwise the first matching target decides, as in Fleet: its
        ``doNotDeploy`` excludes the cluster, else its overrides are merged
        over the bundle's options.
        """
        if self.target_restrictions and not any(
            r.matches(cluster_name=cluster_name, labels=labels, groups=groups)
            for r in self.target_restrictions
        ):
            return None
        for target in self.targets:
            if target.matches(cluster_name=cluster_name, labels=labels, groups=groups):
                if target.do_not_deploy:
                    return None
                return self.options.merged(target)
        return None

    def all_targets(self) -> tuple[BundleTarget, ...]:
        """Targets and restrictions: everything whose criteria decide where the bundle goes."""
        return self.targets + self.target_restrictions

    def selectors(self, groups: Mapping[str, ClusterGroup]) -> list[LabelSelector]:
        """Every selector over cluster labels that targeting this bundle reads."""
        return [s for target in self.all_targets() for s in target.selectors(groups)]

    def names_targeted(self) -> set[str]:
        return {t.cluster_name for t in self.all_targets() if t.cluster_name}

    def groups_targeted(self) -> set[str]:
        return {t.cluster_group for t in self.all_targets() if t.cluster_group}
