"""Registration tokens: expiring, revocable secrets that let an agent register.

Only the sha256 of a token is stored (in the ``shoal-tokens`` KV bucket), so
reading the bucket does not reveal a usable token, and tokens never appear in
logs.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from controlplane.errors import AuthError

TOKEN_BYTES = 24


class StoredToken(BaseModel):
    model_config = ConfigDict(frozen=True)

    created_at: float
    expires_at: float
    description: str = ""
    revoked: bool = False


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def create(self, *, ttl_seconds: float, description: str = "") -> tuple[str, float]:
        token = "shoal_" + secrets.token_urlsafe(TOKEN_BYTES)
        now = time.time()
        stored = StoredToken(created_at=now, expires_at=now + ttl_seconds, description=description)
        await self._kv.put(token_key(token), stored.model_dump_json().encode())
        return token, stored.expires_at

    async def verify(self, token: str) -> None:
        """Raise :class:`AuthError` unless ``token`` is known, unexpired and not revoked."""
        if not token:
            raise AuthError("no registration token given")
        try:
            entry = await self._kv.get(token_key(token))
        except KeyNotFoundError:
            raise AuthError("unknown registration token") from None
        if not entry.value:
            raise AuthError("unknown registration token")
        stored = StoredToken.model_validate_json(entry.value)
        if stored.revoked:
            raise AuthError("registration token was revoked")
        if stored.expires_at < time.time():
            raise AuthError(
                "registration token expired; create a new one with `shoal token create`"
            )
