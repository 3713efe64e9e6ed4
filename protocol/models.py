"""The objects shoal manages: clusters, cluster groups, bundles and their targets.

These mirror Rancher Fleet's API (``Cluster``, ``ClusterGroup``, ``Bundle``,
``BundleTarget``) closely enough that a Fleet user recognises every field, in
the camelCase spelling Fleet uses when read from YAML or JSON. Target
evaluation lives here because both sides need it: the control plane evaluates
targets once per label class, and tests check the same function against
individual clusters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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


class BundleResource(_Model):
    """One file of a bundle, as read from the source."""

    name: str
    content: str


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


class DiffOptions(_Model):
    compare_patches: tuple[ComparePatch, ...] = Field(default=(), alias="comparePatches")


class DeploymentOptions(_Model):
    """How a bundle is deployed on a cluster; part of the deployment ID.

    Defaults are left out of the wire form, so an option that stays at its
    default costs no bytes and does not change IDs when new options are added.
    """

    default_namespace: str | None = Field(default=None, alias="defaultNamespace")
    namespace: str | None = None
    correct_drift: bool = Field(default=False, alias="correctDrift")
    force: bool = False
    keep_resources: bool = Field(default=False, alias="keepResources")
    diff: DiffOptions | None = None

    def merged(self, override: TargetOverrides) -> DeploymentOptions:
        changes = override.model_dump(exclude_none=True, exclude={"do_not_deploy"})
        return self.model_copy(update=changes) if changes else self


class TargetOverrides(_Model):
    """What a target may change about the bundle's options for the clusters it matches."""

    namespace: str | None = None
    default_namespace: str | None = Field(default=None, alias="defaultNamespace")
    correct_drift: bool | None = Field(default=None, alias="correctDrift")
    force: bool | None = None
    keep_resources: bool | None = Field(default=None, alias="keepResources")
    do_not_deploy: bool = Field(default=False, alias="doNotDeploy")


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


class BundleSpec(_Model):
    """A bundle as the operator declares it; resources travel separately as a blob."""

    name: str
    options: DeploymentOptions = Field(default_factory=DeploymentOptions)
    targets: tuple[BundleTarget, ...] = ()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return validate_bundle_name(value)

    def resolve(
        self,
        *,
        cluster_name: str | None,
        labels: Mapping[str, str],
        groups: Mapping[str, ClusterGroup],
    ) -> DeploymentOptions | None:
        """Options for a cluster, or ``None`` if the bundle does not go there.

        Targets are evaluated in order and the first match wins, as in Fleet.
        """
        for target in self.targets:
            if target.matches(cluster_name=cluster_name, labels=labels, groups=groups):
                if target.do_not_deploy:
                    return None
                return self.options.merged(target)
        return None

    def names_targeted(self) -> set[str]:
        return {t.cluster_name for t in self.targets if t.cluster_name}
