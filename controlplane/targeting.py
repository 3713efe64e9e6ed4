"""Target evaluation per label class: which deployment each class gets.

Given the bundles, the cluster groups and the classes that have members, this
computes the schema (what targets read) and, for every class, the resolved
deployment of every bundle that goes there. Work is proportional to classes x
bundles, never to clusters: that is invariant 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from protocol.classes import (
    ClassSchema,
    Projection,
    representative_labels,
    representative_name,
    schema_from_selectors,
)
from protocol.ids import deployment_id
from protocol.models import BundleSpec, ClusterGroup, DeploymentOptions
from protocol.selectors import LabelSelector


class BundleRecord(BaseModel):
    """A bundle as kept in the ``shoal-bundles`` KV bucket."""

    model_config = ConfigDict(frozen=True)

    spec: BundleSpec
    manifest_id: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Resolved:
    deployment_id: str
    options: DeploymentOptions
    # When, not what: bundles to wait for, and whether rollouts are paused.
    depends_on: tuple[str, ...] = ()
    paused: bool = False


def compute_schema(
    bundles: Iterable[BundleRecord], groups: Mapping[str, ClusterGroup], *, epoch: int
) -> ClassSchema:
    selectors: list[LabelSelector] = [g.selector for g in groups.values()]
    names: set[str] = set()
    for record in bundles:
        for target in record.spec.targets:
            selectors.extend(target.selectors(groups))
        names |= record.spec.names_targeted()
    return schema_from_selectors(selectors, names=names, epoch=epoch)


def resolve_class(
    projection: Projection,
    bundles: Iterable[BundleRecord],
    groups: Mapping[str, ClusterGroup],
) -> dict[str, Resolved]:
    """bundle name -> resolved deployment, for one class."""
    labels = representative_labels(projection)
    name = representative_name(projection)
    resolved: dict[str, tuple[BundleRecord, DeploymentOptions]] = {}
    for record in bundles:
        options = record.spec.resolve(cluster_name=name, labels=labels, groups=groups)
        if options is not None:
            resolved[record.spec.name] = (record, options)
    # A dependsOn selector picks among the bundles that go to these clusters, as
    # Fleet's picks among a cluster's bundle deployments; a name is waited for as is.
    here = {n: record.spec.labels for n, (record, _) in resolved.items()}
    out: dict[str, Resolved] = {}
    for bundle, (record, options) in resolved.items():
        spec = record.spec
        out[bundle] = Resolved(
            deployment_id(record.manifest_id, options),
            options,
            depends_on=spec.dependencies(here) if spec.depends_on else (),
            paused=spec.paused,
        )
    return out
