"""Parsing a bundle's YAML resources into Kubernetes objects.

Both sides need the same answer: the control plane validates a bundle before
accepting it (so a broken file is rejected whole at apply time, naming the
file and document), and the agent parses what it renders. YAML parsing is pure
computation, so it lives here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from protocol.errors import ProtocolError
from protocol.models import BundleResource

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")  # JSON is YAML too

# libyaml's parser when PyYAML was built with it: the same documents, several
# times faster, which matters for a process that renders for many clusters.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(ProtocolError):
    """A resource file is not valid YAML or holds an object Kubernetes would refuse."""

    def __init__(self, message: str, *, file: str, document: int | None = None) -> None:
        where = file if document is None else f"{file} (document {document})"
        super().__init__(f"{where}: {message}")
        self.file = file
        self.document = document
        self.reason = message


@dataclass(frozen=True)
class ParsedObject:
    file: str
    document: int
    obj: dict[str, Any]


def _check_object(obj: object, *, file: str, document: int) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ManifestError(
            f"expected a mapping (a Kubernetes object), got {type(obj).__name__}",
            file=file,
            document=document,
        )
    for field in ("apiVersion", "kind"):
        value = obj.get(field)
        if not isinstance(value, str) or not value:
            raise ManifestError(f"missing or empty field {field!r}", file=file, document=document)
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise ManifestError("missing field 'metadata'", file=file, document=document)
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError("missing or empty field 'metadata.name'", file=file, document=document)
    return obj


def check_object(obj: object, *, file: str, document: int) -> dict[str, Any]:
    """``obj`` if it is a Kubernetes object (apiVersion, kind, metadata.name), else ManifestError.

    For objects an engine produced (kustomize, Helm) rather than a file shoal parsed.
    """
    return _check_object(obj, file=file, document=document)


def parse_resource(resource: BundleResource) -> list[ParsedObject]:
    """Every non-empty document of one file; ``List`` kinds are flattened."""
    try:
        documents = list(yaml.load_all(resource.content, Loader=_Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"invalid YAML{where}: {problem}", file=resource.name) from exc
    out: list[ParsedObject] = []
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        if (
            isinstance(doc, dict)
            and isinstance(doc.get("kind"), str)
            and doc["kind"].endswith("List")
            and isinstance(doc.get("items"), list)
        ):
            for item in doc["items"]:
                out.append(
                    ParsedObject(
                        resource.name,
                        index,
                        _check_object(item, file=resource.name, document=index),
                    )
                )
            continue
        out.append(
            ParsedObject(
                resource.name, index, _check_object(doc, file=resource.name, document=index)
            )
        )
    return out


def parse_resources(resources: Iterable[BundleResource]) -> list[ParsedObject]:
    """All objects of a bundle, in file-name order; the first bad file raises."""
    out: list[ParsedObject] = []
    for resource in sorted(resources, key=lambda r: r.name):
        if resource.name.endswith(MANIFEST_SUFFIXES):
            out.extend(parse_resource(resource))
    return out
