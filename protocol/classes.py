"""Label classes: the unit of targeting and of desired-state publishing.

A class is the set of clusters that no target can tell apart. The control
plane derives a *schema* from every selector in use (bundle targets and
cluster groups): the label keys they read and, per key, the values they
compare against. A cluster's labels are projected onto that schema: a key that
is absent stays absent, a value some selector names stays itself, any other
value becomes ``*`` (which no selector can name, since it is not a valid label
value). Clusters with equal projections share a class however many other
labels they carry, and every selector gives the same answer for all of them.

Both sides compute classes with these functions. The control plane publishes
the schema; an agent projects its own labels onto it, so a schema change costs
one publish per (class, bundle), never one per cluster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import msgpack
from pydantic import BaseModel, ConfigDict, Field

from protocol.selectors import LabelSelector

OTHER_VALUE = "*"
_CLASS_ID_HEX = 16

Projection = tuple[tuple[str, str | None], ...]


class ClassSchema(BaseModel):
    """The label keys and values that targeting reads; ``epoch`` grows on change."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    epoch: int = 0
    keys: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    def same_keys(self, other: ClassSchema) -> bool:
        return self.keys == other.keys


def schema_from_selectors(selectors: Iterable[LabelSelector], *, epoch: int) -> ClassSchema:
    merged: dict[str, set[str]] = {}
    for selector in selectors:
        for key, values in selector.mentioned_values().items():
            merged.setdefault(key, set()).update(values)
    keys = {key: tuple(sorted(values)) for key, values in sorted(merged.items())}
    return ClassSchema(epoch=epoch, keys=keys)


def project(labels: Mapping[str, str], schema: ClassSchema) -> Projection:
    out: list[tuple[str, str | None]] = []
    for key, values in schema.keys.items():
        value = labels.get(key)
        if value is not None and value not in values:
            value = OTHER_VALUE
        out.append((key, value))
    return tuple(out)


def class_id(projection: Projection) -> str:
    """A short stable digest of a projection; one NATS subject token."""
    encoded = msgpack.packb([list(p) for p in projection], use_bin_type=True)
    return hashlib.sha256(encoded).hexdigest()[:_CLASS_ID_HEX]


def class_of(labels: Mapping[str, str], schema: ClassSchema) -> str:
    return class_id(project(labels, schema))


def representative_labels(projection: Projection) -> dict[str, str]:
    """Labels that stand for every cluster of a class when evaluating selectors."""
    return {key: value for key, value in projection if value is not None}
