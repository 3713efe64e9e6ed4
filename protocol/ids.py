"""Content digests: manifest IDs and deployment IDs, as Fleet forms them.

The manifest ID is the sha256 of a bundle's resources in a canonical
encoding; it is also the key of the resources' blob in the object store. The
deployment ID is the manifest ID plus a digest of the resolved deployment
options. Same content gives the same IDs on every machine and every run, so an
unchanged re-apply publishes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgpack

from protocol.models import BundleResource, DeploymentOptions

MANIFEST_PREFIX = "s-"
_OPTIONS_DIGEST_HEX = 16


def canonical_resources(resources: Iterable[BundleResource]) -> bytes:
    """The byte form of a bundle's resources: sorted by name, msgpack-encoded.

    Each entry is ``[name, content]``, or ``[name, content, encoding]`` for a
    binary file, so bundles of text files keep the IDs they always had.
    """
    entries = sorted((r.name, r.content, r.encoding) for r in resources)
    return msgpack.packb(
        [
            [name, content, encoding] if encoding else [name, content]
            for name, content, encoding in entries
        ],
        use_bin_type=True,
    )


def manifest_id(resources: Iterable[BundleResource]) -> str:
    return MANIFEST_PREFIX + hashlib.sha256(canonical_resources(resources)).hexdigest()


def manifest_id_of_blob(blob: bytes) -> str:
    return MANIFEST_PREFIX + hashlib.sha256(blob).hexdigest()


def options_digest(options: DeploymentOptions) -> str:
    payload = options.model_dump(mode="json", exclude_defaults=True)
    encoded = msgpack.packb(payload, use_bin_type=True)
    # msgpack keeps dict insertion order, which follows the model's field order.
    return hashlib.sha256(encoded).hexdigest()[:_OPTIONS_DIGEST_HEX]


def deployment_id(manifest: str, options: DeploymentOptions) -> str:
    return f"{manifest}:{options_digest(options)}"


def manifest_of(deployment: str) -> str:
    """The manifest ID part of a deployment ID."""
    return deployment.split(":", 1)[0]
