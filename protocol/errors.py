"""Errors raised by the protocol package.

Everything both sides agree on fails with one of these, so callers can tell a
peer's bad input from their own bugs::

    ProtocolError
    ├── DecodeError      bytes on the bus that are not a valid message
    ├── SelectorError    a label selector that cannot be parsed or is invalid
    └── InvalidNameError a bundle, cluster or label name that is not allowed
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error the protocol package raises."""


class DecodeError(ProtocolError):
    """A message could not be decoded: not msgpack, wrong version, wrong shape.

    ``kind`` names the expected message type when known.
    """

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class SelectorError(ProtocolError):
    """A label selector is malformed; ``selector`` is the offending text."""

    def __init__(self, message: str, *, selector: str = "") -> None:
        super().__init__(message)
        self.selector = selector


class InvalidNameError(ProtocolError, ValueError):
    """A name (bundle, cluster, label key or value) breaks the naming rules.

    It is a ``ValueError`` too, so that raised inside a pydantic validator it
    becomes part of the model's validation error (and so a decode error).
    """

    def __init__(self, message: str, *, field: str, value: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
