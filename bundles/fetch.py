"""HTTP GET for chart sources: bounded in time and size, credentials kept to their host.

Chart repositories and OCI registries are other people's servers, reached
from the control plane and from agents on small links. Every transfer here
has a per-operation timeout, an overall deadline and a size limit, so a slow
or hostile server costs a bounded amount of time and disk. Credentials go in
an ``Authorization`` header only to the host they were given for: a redirect
to another host (a registry sending blobs to object storage, say) drops them.
Nothing here logs a header.

Failures are raised as :class:`HttpStatusError` (the server answered with an
error status; the caller decides what a 404 means) or :class:`TransferError`
(no usable answer); the chart modules convert both into bundle errors.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Credentials:
    """A user name and password for HTTP basic auth (and OCI token requests)."""

    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


@dataclass(frozen=True)
class Limits:
    """How long and how much one transfer may take."""

    timeout: float = 30.0
    """Seconds for connecting and for each read; a stalled server fails after this."""
    deadline: float = 300.0
    """Seconds for a whole transfer, however steadily the bytes trickle in."""
    max_bytes: int = 64 * 1024 * 1024
    """Largest body accepted; a larger one is refused, not truncated."""


DEFAULT_LIMITS = Limits()


class TransferError(Exception):
    """No usable answer: connection refused, timeout, TLS failure, a body too large."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class HttpStatusError(TransferError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, url: str, status: int, headers: Message) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.headers = headers


@dataclass(frozen=True)
class Response:
    url: str
    status: int
    headers: Message
    body: bytes


class _SameHostAuthRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, keeping ``Authorization`` only while the host stays the same."""

    def redirect_request(  # noqa: PLR0917 (the signature urllib calls)
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.get_header("Authorization")
        if new is not None and auth and urlsplit(newurl).netloc == urlsplit(req.full_url).netloc:
            new.add_unredirected_header("Authorization", auth)
        return new


def _opener(ssl_context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        _SameHostAuthRedirects(), urllib.request.HTTPSHandler(context=ssl_context)
    )


def _request(url: str, headers: Mapping[str, str], authorization: str | None) -> Any:
    req = urllib.request.Request(url, headers=dict(headers), method="GET")
    if authorization:
        # Unredirected: the redirect handler decides whether it follows.
        req.add_unredirected_header("Authorization", authorization)
    return req


def _open(
    url: str,
    *,
    headers: Mapping[str, str],
    authorization: str | None,
    limits: Limits,
    ssl_context: ssl.SSLContext | None,
) -> Any:
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise TransferError(f"unsupported URL scheme {scheme!r} in {url}", url=url)
    try:
        return _opener(ssl_context).open(
            _request(url, headers, authorization), timeout=limits.timeout
        )
    except urllib.error.HTTPError as exc:
        with exc:
            raise HttpStatusError(
                f"HTTP {exc.code} {exc.reason} from {url}",
                url=url,
                status=exc.code,
                headers=exc.headers,
            ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise TransferError(f"cannot fetch {url}: {cause}", url=url) from exc


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


def _read(resp: Any, url: str, sink: _Sink | None, limits: Limits, started: float) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise TransferError(
            f"{url} is {int(declared)} bytes, more than the limit of {limits.max_bytes}", url=url
        )
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = resp.read(_CHUNK)
        except (OSError, ValueError) as exc:
            raise TransferError(f"cannot read {url}: {exc}", url=url) from exc
        if not chunk:
            break
        size += len(chunk)
        if size > limits.max_bytes:
            raise TransferError(f"{url} is larger than the limit of {limits.max_bytes}", url=url)
        if time.monotonic() - started > limits.deadline:
            raise TransferError(f"{url} took longer than {limits.deadline:g} s", url=url)
        if sink is None:
            parts.append(chunk)
        else:
            sink.write(chunk)
    return b"".join(parts)


def get(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    authorization: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """GET ``url`` into memory (indexes, manifests, tag lists)."""
    started = time.monotonic()
    with _open(
        url,
        headers=headers or {},
        authorization=authorization,
        limits=limits,
        ssl_context=ssl_context,
    ) as resp:
        body = _read(resp, url, None, limits, started)
        return Response(resp.geturl(), resp.status, resp.headers, body)


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size: int


def download(
    url: str,
    directory: Path,
    *,
    headers: Mapping[str, str] | None = None,
    authorization: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    ssl_context: ssl.SSLContext | None = None,
) -> Downloaded:
    """GET ``url`` into a new temporary file in ``directory``, hashing as it streams.

    The caller moves the file into place or deletes it; on failure it is gone.
    """
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    fd, name = tempfile.mkstemp(dir=directory, prefix=".download-")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as sink:
            hasher = _HashingWriter(sink)
            with _open(
                url,
                headers=headers or {},
                authorization=authorization,
                limits=limits,
                ssl_context=ssl_context,
            ) as resp:
                _read(resp, url, hasher, limits, started)
        return Downloaded(path, hasher.hexdigest(), hasher.size)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class _HashingWriter:
    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._sink.write(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
