"""The msgpack codec for every message on the bus.

Wire form: a msgpack array ``[version, kind, payload]``. ``decode`` turns
anything that is not a well-formed message of an expected kind into a
:class:`DecodeError` and nothing else, which is what lets receivers count and
drop garbage without crashing; the fuzz tests hold it to that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import msgpack
from pydantic import ValidationError

from protocol import admin, messages
from protocol.errors import DecodeError
from protocol.ids import canonical_resources
from protocol.messages import WireMessage
from protocol.models import RESOURCE_ENCODINGS, BundleResource

VERSION = 1
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

M = TypeVar("M", bound=WireMessage)


def _registry() -> dict[str, type[WireMessage]]:
    found: dict[str, type[WireMessage]] = {}
    for module in (messages, admin):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, WireMessage) and value.KIND:
                found[value.KIND] = value
    return found


KINDS: dict[str, type[WireMessage]] = _registry()


def encode_heartbeat(seq: int, status_seq: int = 0) -> bytes:
    """``encode(Heartbeat(seq=..., status_seq=...))``, byte for byte, without the model.

    Every cluster sends one every few seconds: at fleet scale the model's
    validation and dump are most of a heartbeat's cost, on agents and in the
    benchmarks that simulate them.
    """
    payload: dict[str, int] = {"seq": seq}
    if status_seq:
        payload["status_seq"] = status_seq
    return msgpack.packb([VERSION, messages.Heartbeat.KIND, payload], use_bin_type=True)


def _condition_payload(condition: messages.ResourceCondition) -> dict[str, str]:
    payload = {"kind": condition.kind, "name": condition.name}
    if condition.namespace:
        payload["namespace"] = condition.namespace
    if condition.api_version:
        payload["api_version"] = condition.api_version
    if condition.reason:
        payload["reason"] = condition.reason
    return payload


def _bundle_status_payload(status: messages.BundleStatus) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "bundle": status.bundle,
        "deployment_id": status.deployment_id,
        "state": status.state.value,
    }
    if status.message:
        payload["message"] = status.message
    if status.non_ready:
        payload["non_ready"] = [_condition_payload(c) for c in status.non_ready]
    if status.modified:
        payload["modified"] = [_condition_payload(c) for c in status.modified]
    return payload


def encode_status(seq: int, sent_at: float, bundles: Sequence[messages.BundleStatus]) -> bytes:
    """``encode(StatusReport(seq=..., sent_at=..., bundles=...))``, byte for byte.

    Every cluster sends one per change: building the report model only to dump
    it again was about 5 % of a simulated agent's CPU in a rollout (py-spy on a
    worker of 20,000 agents). A test holds it to the models, field by field.
    """
    payload: dict[str, Any] = {"seq": seq, "sent_at": float(sent_at)}
    if bundles:
        payload["bundles"] = [_bundle_status_payload(b) for b in bundles]
    return msgpack.packb([VERSION, messages.StatusReport.KIND, payload], use_bin_type=True)


def encode(message: WireMessage) -> bytes:
    payload = message.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return msgpack.packb([VERSION, message.KIND, payload], use_bin_type=True)


def _unpack(data: bytes) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not msgpack: {exc}") from exc


def decode_any(data: bytes) -> WireMessage:
    """Decode a message of any known kind."""
    obj = _unpack(data)
    if not (isinstance(obj, list) and len(obj) == 3):
        raise DecodeError("not a shoal message: want [version, kind, payload]")
    version, kind, payload = obj
    if version != VERSION:
        raise DecodeError(f"unsupported message version {version!r} (this side speaks {VERSION})")
    if not isinstance(kind, str) or kind not in KINDS:
        raise DecodeError(f"unknown message kind {kind!r}")
    if not isinstance(payload, dict):
        raise DecodeError(f"payload of {kind!r} is not a map", kind=kind)
    cls = KINDS[kind]
    try:
        return cls.model_validate(payload)
    except (ValidationError, ValueError, TypeError) as exc:
        raise DecodeError(f"invalid {kind!r} message: {exc}", kind=kind) from exc


def decode(data: bytes, expected: type[M]) -> M:
    """Decode a message that must be of kind ``expected``."""
    message = decode_any(data)
    if not isinstance(message, expected):
        raise DecodeError(
            f"expected a {expected.KIND!r} message, got {message.KIND!r}", kind=expected.KIND
        )
    return message


def encode_resources(resources: list[BundleResource]) -> bytes:
    """The blob stored under a manifest ID; see :func:`protocol.ids.canonical_resources`."""
    return canonical_resources(resources)


def decode_resources(blob: bytes) -> list[BundleResource]:
    obj = _unpack(blob)
    if not isinstance(obj, list):
        raise DecodeError("resource blob is not a list")
    out: list[BundleResource] = []
    for item in obj:
        if not (
            isinstance(item, list)
            and len(item) in (2, 3)
            and isinstance(item[0], str)
            and isinstance(item[1], str)
            and (len(item) == 2 or (item[2] in RESOURCE_ENCODINGS and item[2]))
        ):
            raise DecodeError(
                "resource blob entry is not [name, content] or [name, content, encoding]"
            )
        encoding = item[2] if len(item) == 3 else ""
        out.append(BundleResource(name=item[0], content=item[1], encoding=encoding))
    return out
