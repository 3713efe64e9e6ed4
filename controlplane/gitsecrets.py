"""Git secrets: the credentials gitrepos fetch with, in the ``shoal-git-secrets`` bucket.

A secret is written once through the admin API and read only by the leader
when it fetches; ``list`` shows its name, kind, user and the gitrepos using
it, never the password or key. A secret in use cannot be deleted, and a
changed secret has its gitrepos polled at once (it may fix a failing fetch).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import structlog
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from controlplane.errors import NotFound, RequestRejected
from protocol import admin
from protocol.gitrepos import GitCredentials, validate_secret_name

log = structlog.get_logger(__name__)


class GitSecrets:
    def __init__(
        self,
        kv: KeyValue,
        *,
        users: Callable[[str], list[str]],
        on_change: Callable[[Iterable[str]], Awaitable[None]],
    ) -> None:
        self._kv = kv
        self._users = users  # secret name -> gitrepos using it, sorted
        self._on_change = on_change

    async def set(self, name: str, credentials: GitCredentials) -> None:
        validate_secret_name(name)
        await self._kv.put(name, credentials.model_dump_json().encode())
        log.info("gitrepo.secret.set", secret=name, kind=credentials.kind)
        await self._on_change(self._users(name))

    async def delete(self, name: str) -> None:
        users = self._users(name)
        if users:
            raise RequestRejected(f"git secret {name!r} is used by gitrepo {', '.join(users)}")
        await self.get(name)
        await self._kv.delete(name)
        log.info("gitrepo.secret.deleted", secret=name)

    async def get(self, name: str) -> GitCredentials:
        try:
            entry = await self._kv.get(name)
        except KeyNotFoundError:
            raise NotFound(
                f"no git secret named {name!r}; "
                f"create it with `shoal gitrepo secret set {name} ...`"
            ) from None
        return GitCredentials.model_validate_json(entry.value or b"{}")

    async def list(self) -> admin.GitSecretListReply:
        try:
            keys = sorted(await self._kv.keys())
        except NoKeysError:
            keys = []
        out = []
        for key in keys:
            try:
                credentials = await self.get(key)
            except NotFound:
                continue  # deleted meanwhile
            out.append(
                admin.GitSecretInfo(
                    name=key,
                    kind=credentials.kind,
                    username=credentials.username,
                    used_by=tuple(self._users(key)),
                )
            )
        return admin.GitSecretListReply(secrets=tuple(out))
