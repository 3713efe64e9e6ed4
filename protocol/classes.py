"""Label classes: the unit of targeting and of desired-state publishing.

A class is the set of clusters that no target can tell apart. The control
plane derives a *schema* from every selector in use (bundle targets and
cluster groups): the label keys they read and, per key, the values they
compare against. A cluster's labels are projected onto that schema: a key that
is absent stays absent, a value some selector names stays itself, any other
value becomes ``*`` (which no selector can name, since it is not a valid label
value). Clusters with equal projections share a class however many other
labels they carry, and every selector gives the same answer for all of them.

Targets by cluster name are handled the same way: the names that targets
mention are one more key of the schema (``NAME_KEY``, which is not a valid
label key, so it cannot collide), so a named cluster falls into a class of its
own and every target feature (customisation, ``doNotDeploy``) works for it
unchanged.

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
NAME_KEY = "@name"
_CLASS_ID_HEX = 16

Projection = tuple[tuple[str, str | None], ...]


class ClassSchema(BaseModel):
    """The label keys and values that targeting reads; ``epoch`` grows on change."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    epoch: int = 0
    keys: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    def same_keys(self, other: ClassSchema) -> bool:
        return self.keys == other.keys


def schema_from_selectors(
    selectors: Iterable[LabelSelector], *, names: Iterable[str] = (), epoch: int
) -> ClassSchema:
    """The schema for a set of selectors and the cluster names targets mention."""
    merged: dict[str, set[str]] = {}
    named = set(names)
    if named:
        merged[NAME_KEY] = named
    for selector in selectors:
        for key, values in selector.mentioned_values().items():
            merged.setdefault(key, set()).update(values)
    keys = {key: tuple(sorted(values)) for key, values in sorted(merged.items())}
    return ClassSchema(epoch=epoch, keys=keys)


def class_labels(name: str, labels: Mapping[str, str]) -> dict[str, str]:
    """A cluster's labels plus its name under ``NAME_KEY``: what classes project."""
    return {**labels, NAME_KEY: name}


def project(labels: Mapping[str, str], schema: ClassSchema) -> Projection:
    """Project ``class_labels(name, labels)`` onto the schema."""
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


def class_of(name: str, labels: Mapping[str, str], schema: ClassSchema) -> str:
    """The class of the cluster called ``name`` with ``labels``."""
    return class_id(project(class_labels(name, labels), schema))


def representative_labels(projection: Projection) -> dict[str, str]:
    """Labels that stand for every cluster of a class when evaluating selectors.

    The class's cluster name, when the schema distinguishes one, is under
    ``NAME_KEY``; see :func:`representative_name`.
    """
    return {key: value for key, value in projection if value is not None and key != NAME_KEY}


def representative_name(projection: Projection) -> str | None:
    """The cluster name a class stands for, or ``None`` if it is not a named class."""
    for key, value in projection:
        if key == NAME_KEY and value not in (None, OTHER_VALUE):
            return value
    return None
