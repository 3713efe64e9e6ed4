"""The git webhook endpoint: a push to a repository polls its gitrepos at once.

Off unless ``webhook_listen`` (``--webhook-listen``, ``SHOAL_WEBHOOK_LISTEN``)
is set, and then only with a ``webhook_secret`` (``SHOAL_WEBHOOK_SECRET``):

- GitHub: ``X-GitHub-Event: push`` with ``X-Hub-Signature-256:
  sha256=<HMAC-SHA256 of the body under the secret>``;
- GitLab: ``X-Gitlab-Event: Push Hook`` (or ``Tag Push Hook``) with
  ``X-Gitlab-Token: <the secret>``.

A request that proves neither gets 401; a body over ``webhook_max_body``
gets 413; another event (GitHub's ``ping``, issues, ...) gets 204 and a log
line. A verified push is matched to gitrepos by repository URL (any of the
payload's clone URLs, compared as ``host/path``) and branch; the matches are
polled by the leader (forwarded over NATS when this replica does not lead),
and the reply lists them. The secret is compared in constant time and never
logged.

The server is aiohttp's: a network-facing HTTP/1.1 parser is not something
to write again, and aiohttp is already installed with the test tooling.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Any

import structlog
from aiohttp import web

from controlplane.errors import ControlPlaneError
from controlplane.gitrepos import GitRepos, StoredGitRepo
from protocol.gitrepos import normalize_repo_url

log = structlog.get_logger(__name__)

GITLAB_PUSH_EVENTS = ("Push Hook", "Tag Push Hook")
# Payload fields holding the repository's URLs (GitHub's repository, GitLab's project).
URL_FIELDS = ("clone_url", "ssh_url", "git_url", "html_url", "url", "git_http_url", "git_ssh_url")


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ControlPlaneError(f"--webhook-listen {listen!r}: want HOST:PORT, e.g. 0.0.0.0:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


def push_urls(payload: dict[str, Any]) -> set[str]:
    """Every repository URL a push payload names, normalised for matching."""
    urls: set[str] = set()
    for section in ("repository", "project"):
        value = payload.get(section)
        if isinstance(value, dict):
            urls.update(
                normalize_repo_url(value[f])
                for f in URL_FIELDS
                if isinstance(value.get(f), str) and value[f]
            )
    return urls


def default_branch(payload: dict[str, Any]) -> str:
    for section in ("repository", "project"):
        value = payload.get(section)
        if isinstance(value, dict) and isinstance(value.get("default_branch"), str):
            return str(value["default_branch"])
    return ""


def matching(repos: Iterable[StoredGitRepo], payload: dict[str, Any]) -> list[str]:
    """Gitrepos a push concerns: same repository, and the branch they follow.

    A gitrepo following the default branch matches a push to it (any push when
    the payload does not say which is the default); one pinned to a revision
    matches any push, since a tag may have moved and a poll is cheap.
    """
    urls = push_urls(payload)
    ref = payload.get("ref")
    ref = ref if isinstance(ref, str) else ""
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    default = default_branch(payload)
    names = []
    for stored in repos:
        spec = stored.spec
        if normalize_repo_url(spec.repo) not in urls:
            continue
        if spec.branch:
            hit = branch == spec.branch
        elif spec.revision:
            hit = True
        else:
            hit = branch is not None and (not default or branch == default)
        if hit:
            names.append(spec.name)
    return sorted(names)


class WebhookServer:
    def __init__(self, gitrepos: GitRepos, *, listen: str, secret: str, max_body: int) -> None:
        if not secret:
            raise ControlPlaneError(
                "the git webhook needs a shared secret: set SHOAL_WEBHOOK_SECRET "
                "(the same one as in GitHub or GitLab)"
            )
        self._gitrepos = gitrepos
        self._host, self._port = parse_listen(listen)
        self._secret = secret.encode()
        self._max_body = max_body
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=self._max_body)
        app.router.add_post("/", self.handle)
        app.router.add_post("/webhook", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ControlPlaneError(
                f"the git webhook cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from exc
        addresses = self._runner.addresses  # the real port, when 0 was asked for
        self.port = int(addresses[0][1]) if addresses else self._port
        log.info("webhook.listening", host=self._host, port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self._max_body:
            return _reply(413, {"error": f"body exceeds {self._max_body} bytes"})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _reply(413, {"error": f"body exceeds {self._max_body} bytes"})
        github = request.headers.get("X-GitHub-Event")
        gitlab = request.headers.get("X-Gitlab-Event")
        if not self._verified(request, body, github=github is not None):
            log.warning("webhook.unauthorized", remote=request.remote, github=github, gitlab=gitlab)
            return _reply(401, {"error": "signature or token does not match"})
        event = github or gitlab or ""
        if event not in ("push", *GITLAB_PUSH_EVENTS):
            log.info("webhook.ignored", kind=event or "(none)", remote=request.remote)
            return web.Response(status=204)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _reply(400, {"error": "body is not JSON"})
        if not isinstance(payload, dict):
            return _reply(400, {"error": "body is not a JSON object"})
        names = matching(self._gitrepos.repos.values(), payload)
        await self._gitrepos.request_poll(names)
        log.info(
            "webhook.push", ref=payload.get("ref"), urls=sorted(push_urls(payload)), gitrepos=names
        )
        return _reply(200, {"gitrepos": names})

    def _verified(self, request: web.Request, body: bytes, *, github: bool) -> bool:
        signature = request.headers.get("X-Hub-Signature-256")
        if signature is not None or github:
            expected = "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            return hmac.compare_digest(expected.encode(), (signature or "").encode())
        token = request.headers.get("X-Gitlab-Token")
        return token is not None and hmac.compare_digest(self._secret, token.encode())


def _reply(status: int, data: dict[str, Any]) -> web.Response:
    return web.json_response(data, status=status)
