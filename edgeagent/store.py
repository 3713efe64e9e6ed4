"""What an agent keeps across restarts: identity, last desired state, resource blobs.

Invariant 6 says an agent keeps enforcing the last desired state it received
while the bus is unreachable, also across its own restarts; so the desired
state and the blobs it needs are saved after every change. Every file is
written to a temporary name and renamed into place (``os.replace``), so a
crash never leaves half a file; files are mode 0600 because the identity holds
the agent's secret. A :class:`MemoryStore` serves simulated fleets, whose
agents keep nothing on disk.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgeagent.errors import StateStoreError
from protocol.classes import ClassSchema
from protocol.messages import DesiredBundle

IDENTITY_FILE = "identity.json"
DESIRED_FILE = "desired.json"
BLOB_DIR = "blobs"
FILE_MODE = 0o600


@dataclass(frozen=True)
class Identity:
    """Who this agent is, as the control plane told it at registration."""

    cluster_id: str
    secret: str
    shard: int
    name: str


@dataclass
class SavedDesired:
    """The desired state as last received, with the revisions that order it."""

    class_id: str = ""
    schema: ClassSchema | None = None
    class_bundles: dict[str, DesiredBundle] = field(default_factory=dict)
    cluster_bundles: dict[str, DesiredBundle] = field(default_factory=dict)


class StateStore(Protocol):
    def load_identity(self) -> Identity | None: ...
    def save_identity(self, identity: Identity) -> None: ...
    def load_desired(self) -> SavedDesired | None: ...
    def save_desired(self, saved: SavedDesired) -> None: ...


class BlobCache(Protocol):
    def get(self, manifest_id: str) -> bytes | None: ...
    def put(self, manifest_id: str, blob: bytes) -> None: ...


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename; mode 0600."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StateStoreError(f"cannot write {path}: {exc}", path=str(path)) from exc


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateStoreError(f"cannot read {path}: {exc}", path=str(path)) from exc


def _bundles_json(bundles: dict[str, DesiredBundle]) -> dict[str, Any]:
    return {k: v.model_dump(mode="json", by_alias=True) for k, v in bundles.items()}


def desired_to_json(saved: SavedDesired) -> dict[str, Any]:
    return {
        "class_id": saved.class_id,
        "schema": saved.schema.model_dump(mode="json") if saved.schema else None,
        "class_bundles": _bundles_json(saved.class_bundles),
        "cluster_bundles": _bundles_json(saved.cluster_bundles),
    }


def desired_from_json(raw: dict[str, Any]) -> SavedDesired:
    schema = raw.get("schema")
    return SavedDesired(
        class_id=str(raw.get("class_id", "")),
        schema=ClassSchema.model_validate(schema) if schema is not None else None,
        class_bundles={
            k: DesiredBundle.model_validate(v) for k, v in raw.get("class_bundles", {}).items()
        },
        cluster_bundles={
            k: DesiredBundle.model_validate(v) for k, v in raw.get("cluster_bundles", {}).items()
        },
    )


class DiskStore:
    """State in a directory: identity.json, desired.json and blobs/<manifest id>."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def load_identity(self) -> Identity | None:
        path = self.state_dir / IDENTITY_FILE
        raw = _read_json(path)
        if raw is None:
            return None
        try:
            return Identity(
                cluster_id=str(raw["cluster_id"]),
                secret=str(raw["secret"]),
                shard=int(raw["shard"]),
                name=str(raw["name"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateStoreError(f"{path} is not a valid identity: {exc}", path=str(path)) from exc

    def save_identity(self, identity: Identity) -> None:
        write_atomic(self.state_dir / IDENTITY_FILE, json.dumps(asdict(identity)).encode())

    def load_desired(self) -> SavedDesired | None:
        path = self.state_dir / DESIRED_FILE
        raw = _read_json(path)
        if raw is None:
            return None
        try:
            return desired_from_json(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            raise StateStoreError(
                f"{path} is not a valid desired state: {exc}", path=str(path)
            ) from exc

    def save_desired(self, saved: SavedDesired) -> None:
        write_atomic(self.state_dir / DESIRED_FILE, json.dumps(desired_to_json(saved)).encode())


class DiskBlobCache:
    """Blobs under ``<state dir>/blobs/<manifest id>``; a bad or unreadable file is a miss."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, manifest_id: str) -> bytes | None:
        try:
            return (self.directory / manifest_id).read_bytes()
        except OSError:
            return None

    def put(self, manifest_id: str, blob: bytes) -> None:
        write_atomic(self.directory / manifest_id, blob)


class MemoryStore:
    """A store that forgets on exit; for simulated agents and tests."""

    def __init__(self, identity: Identity | None = None) -> None:
        self.identity = identity
        self.desired: SavedDesired | None = None

    def load_identity(self) -> Identity | None:
        return self.identity

    def save_identity(self, identity: Identity) -> None:
        self.identity = identity

    def load_desired(self) -> SavedDesired | None:
        return self.desired

    def save_desired(self, saved: SavedDesired) -> None:
        self.desired = saved


class MemoryBlobCache:
    """Blobs in a dict; one instance can serve a whole simulated fleet."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def get(self, manifest_id: str) -> bytes | None:
        return self.blobs.get(manifest_id)

    def put(self, manifest_id: str, blob: bytes) -> None:
        self.blobs[manifest_id] = blob
