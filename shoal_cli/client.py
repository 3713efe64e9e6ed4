"""The admin client: what ``shoal apply``, ``status``, ``clusters`` and friends speak.

A thin layer over NATS request/reply: encode a protocol request, wait for the
reply, turn an :class:`ErrorReply` or a timeout into a :class:`CliError` that
says what to do.
"""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

from protocol import codec, subjects
from protocol.errors import DecodeError
from protocol.messages import ErrorReply, WireMessage
from shoal_cli.errors import CliError, ControlPlaneTimeout

R = TypeVar("R", bound=WireMessage)

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0


async def _quiet(exc: Exception) -> None:
    """The CLI reports connection errors once, itself; nats-py would print tracebacks."""


class AdminClient:
    def __init__(self, url: str, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.url = url
        self._timeout = timeout
        self._nc: Client | None = None

    async def __aenter__(self) -> AdminClient:
        try:
            self._nc = await nats.connect(
                servers=self.url.split(","),
                name="shoal-cli",
                connect_timeout=CONNECT_TIMEOUT,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=_quiet,
            )
        except Exception as exc:  # nats raises OSError and its own errors
            raise CliError(
                f"cannot reach the shoal server at {self.url}. "
                "Is `shoal server` running? Pass --server URL or set SHOAL_URL."
            ) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._nc is not None:
            await self._nc.close()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("client not connected")
        return self._nc

    async def call(self, subject: str, request: WireMessage, reply_type: type[R]) -> R:
        try:
            msg = await self.nc.request(subject, codec.encode(request), timeout=self._timeout)
        except NoRespondersError as exc:
            raise CliError(
                f"no shoal control plane answers at {self.url} (NATS is up, but nothing "
                "serves the admin API: is `shoal server` running against it?)"
            ) from exc
        except (TimeoutError, NatsTimeoutError) as exc:
            raise ControlPlaneTimeout(
                f"the control plane at {self.url} did not answer within {self._timeout:.0f} s"
            ) from exc
        try:
            reply = codec.decode_any(msg.data)
        except DecodeError as exc:
            raise CliError(f"unreadable reply from the control plane: {exc}") from exc
        if isinstance(reply, ErrorReply):
            raise CliError(reply.error)
        if not isinstance(reply, reply_type):
            raise CliError(f"unexpected {reply.KIND!r} reply from the control plane")
        return reply

    async def admin(self, request: WireMessage, reply_type: type[R]) -> R:
        op = getattr(request, "OP", "")
        return await self.call(subjects.admin(op), request, reply_type)

    async def upload_blob(self, name: str, blob: bytes) -> bool:
        """Store a blob unless it is already there; returns whether it was uploaded."""
        js = self.nc.jetstream(timeout=self._timeout)
        try:
            store = await js.object_store(subjects.BLOB_BUCKET)
        except (BucketNotFoundError, NotFoundError) as exc:
            raise CliError(
                f"the blob store is missing at {self.url}: is `shoal server` running?"
            ) from exc
        try:
            await store.get_info(name)
            return False
        except ObjectNotFoundError:
            pass
        try:
            await store.put(name, blob)
        except Exception as exc:  # nats raises timeouts and API errors of many types
            raise CliError(f"uploading the bundle's resources to {self.url} failed: {exc}") from exc
        return True
