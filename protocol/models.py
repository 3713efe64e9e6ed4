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
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.errors import InvalidNameError
from protocol.options import (
    MAX_RELEASE_NAME,
    ComparePatch,
    ComparePatchOperation,
    DeploymentOptions,
    DiffOptions,
    HelmOptions,
    IgnoreOptions,
    KeyRef,
    KustomizeOptions,
    TargetOverrides,
    ValuesFrom,
    YamlOptions,
    merge_values,
)
from protocol.selectors import LabelSelector, validate_labels

# The deployment options live in protocol.options; they are re-exported here.
__all__ = [
    "MAX_RELEASE_NAME",
    "RESOURCE_ENCODINGS",
    "BundleRef",
    "BundleResource",
    "BundleSpec",
    "BundleTarget",
    "Cluster",
    "ClusterGroup",
    "ComparePatch",
    "ComparePatchOperation",
    "DeploymentOptions",
    "DiffOptions",
    "HelmOptions",
    "IgnoreOptions",
    "KeyRef",
    "KustomizeOptions",
    "TargetOverrides",
    "ValuesFrom",
    "YamlOptions",
    "merge_values",
    "validate_bundle_name",
    "validate_cluster_name",
]

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

    @classmethod
    def of_bytes(cls, name: str, data: bytes) -> BundleResource:
        """A file as it travels: text when it is UTF-8, base64 otherwise."""
        try:
            return cls(name=name, content=data.decode("utf-8"))
        except UnicodeDecodeError:
            return cls(name=name, content=base64.b64encode(data).decode("ascii"), encoding="base64")

    def data(self) -> bytes:
        """The file's bytes, whichever way it travels."""
        if self.encoding == "base64":
            return base64.b64decode(self.content)
        return self.content.encode("utf-8")


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
    ``depends_on`` and ``paused`` travel to the agents with the desired state
    (see :class:`protocol.messages.DesiredBundle`); ``rollout_strategy`` is
    kept, not enforced.
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

    def dependencies(self, bundles: Mapping[str, Mapping[str, str]]) -> tuple[str, ...]:
        """Names of the bundles this one waits for, given every bundle's labels by name.

        A ``dependsOn`` entry by name names one bundle (whether or not it exists
        yet: the agent waits for it); one by selector names every other bundle
        whose labels it matches.
        """
        names: set[str] = set()
        for ref in self.depends_on:
            if ref.name:
                names.add(ref.name)
            if ref.selector is not None:
                selector = ref.selector
                names.update(n for n, labels in bundles.items() if selector.matches(labels))
        names.discard(self.name)
        return tuple(sorted(names))

    def names_targeted(self) -> set[str]:
        return {t.cluster_name for t in self.all_targets() if t.cluster_name}

    def groups_targeted(self) -> set[str]:
        return {t.cluster_group for t in self.all_targets() if t.cluster_group}
