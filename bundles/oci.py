"""Pulling Helm charts from OCI registries (``oci://host/path/chart``), over HTTP(S).

A chart in a registry is an OCI image manifest whose one interesting layer has
the media type ``application/vnd.cncf.helm.chart.content.v1.tar+gzip``: the
same ``.tgz`` a chart repository serves, addressed by its sha256 digest. This
module speaks the three calls of the OCI distribution API that pulling needs
(list tags, get a manifest, get a blob), with the registry token dance:
anonymous first; on ``401`` with a ``Bearer`` challenge, a token from the
realm it names (with basic credentials when given); on a ``Basic`` challenge,
the credentials themselves.

It is written here, rather than through ``helm_python.pull``, because a pull
in the Go library cannot be given a deadline or a size limit and cannot be
cancelled from Python, and an agent on a flaky link must not hang in it.

Chart versions with build metadata are stored under tags with ``_`` in place
of ``+`` (OCI tags cannot hold ``+``); :func:`version_from_tag` and
:func:`tag_from_version` translate.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urljoin

from bundles.fetch import (
    DEFAULT_LIMITS,
    Credentials,
    Downloaded,
    HttpStatusError,
    Limits,
    Response,
    TransferError,
    download,
    get,
)

HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
_LEGACY_CHART_LAYER = "application/tar+gzip"
_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
_MAX_TAG_PAGES = 100
_CHALLENGE_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')
_T = TypeVar("_T")


class OciError(TransferError):
    """The registry answered, but not with a Helm chart."""


@dataclass(frozen=True)
class OciReference:
    """``oci://registry/repository``: the registry host (with port) and the repository path."""

    registry: str
    repository: str

    @classmethod
    def parse(cls, ref: str) -> OciReference:
        rest = ref.removeprefix("oci://").strip("/")
        registry, _, repository = rest.partition("/")
        if not registry or not repository:
            raise ValueError(f"invalid OCI reference {ref!r}: want oci://registry/path/chart")
        return cls(registry, repository)

    def __str__(self) -> str:
        return f"oci://{self.registry}/{self.repository}"


def tag_from_version(version: str) -> str:
    return version.replace("+", "_")


def version_from_tag(tag: str) -> str:
    return tag.replace("_", "+")


@dataclass(frozen=True)
class ChartLayer:
    digest: str  # "sha256:<hex>"
    size: int


class OciClient:
    """One registry conversation: tokens obtained are reused for its later calls."""

    def __init__(
        self,
        *,
        credentials: Credentials | None = None,
        limits: Limits = DEFAULT_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        plain_http: bool = False,
    ) -> None:
        self._credentials = credentials
        self._limits = limits
        self._ssl = ssl_context
        self._scheme = "http" if plain_http else "https"
        self._authorization: dict[str, str] = {}  # registry -> header value

    def _url(self, ref: OciReference, path: str) -> str:
        return f"{self._scheme}://{ref.registry}/v2/{ref.repository}/{path}"

    def tags(self, ref: OciReference) -> list[str]:
        """Every tag of the repository, following the registry's pagination."""
        tags: list[str] = []
        url: str | None = self._url(ref, "tags/list")
        for _ in range(_MAX_TAG_PAGES):
            if url is None:
                break
            resp = self._get(ref, url, {"Accept": "application/json"})
            try:
                listed = json.loads(resp.body).get("tags") or []
            except (ValueError, AttributeError) as exc:
                raise OciError(f"{url} did not return a tag list: {exc}", url=url) from exc
            tags.extend(str(t) for t in listed)
            url = _next_link(resp)
        return tags

    def chart_layer(self, ref: OciReference, tag: str) -> ChartLayer:
        """The chart layer of the manifest under ``tag``."""
        url = self._url(ref, f"manifests/{tag}")
        resp = self._get(ref, url, {"Accept": _MANIFEST_TYPES})
        try:
            manifest: dict[str, Any] = json.loads(resp.body)
            layers = manifest.get("layers") or []
        except (ValueError, AttributeError) as exc:
            raise OciError(f"{url} did not return an image manifest: {exc}", url=url) from exc
        for layer in layers:
            if isinstance(layer, dict) and layer.get("mediaType") in (
                HELM_CHART_LAYER,
                _LEGACY_CHART_LAYER,
            ):
                digest = str(layer.get("digest", ""))
                if not digest.startswith("sha256:"):
                    raise OciError(f"{url}: chart layer digest {digest!r} is not sha256", url=url)
                return ChartLayer(digest, int(layer.get("size", 0)))
        raise OciError(f"{url}: no layer of type {HELM_CHART_LAYER}; not a Helm chart", url=url)

    def download_layer(self, ref: OciReference, layer: ChartLayer, directory: Path) -> Downloaded:
        """The layer's blob in a new file in ``directory``, checked against its digest."""
        url = self._url(ref, f"blobs/{layer.digest}")
        if layer.size > self._limits.max_bytes:
            raise TransferError(
                f"{url} is {layer.size} bytes, more than the limit of {self._limits.max_bytes}",
                url=url,
            )
        got = self._with_auth(
            ref,
            url,
            lambda auth: download(
                url, directory, authorization=auth, limits=self._limits, ssl_context=self._ssl
            ),
        )
        if f"sha256:{got.sha256}" != layer.digest:
            got.path.unlink(missing_ok=True)
            raise OciError(f"{url}: content has digest sha256:{got.sha256}", url=url)
        return got

    def _get(self, ref: OciReference, url: str, headers: dict[str, str]) -> Response:
        return self._with_auth(
            ref,
            url,
            lambda auth: get(
                url,
                headers=headers,
                authorization=auth,
                limits=self._limits,
                ssl_context=self._ssl,
            ),
        )

    def _with_auth(self, ref: OciReference, url: str, call: Callable[[str | None], _T]) -> _T:
        try:
            return call(self._authorization.get(ref.registry))
        except HttpStatusError as exc:
            if exc.status != 401:
                raise
            challenge = exc.headers.get("WWW-Authenticate", "")
            self._authorization[ref.registry] = self._answer(challenge, url)
        return call(self._authorization[ref.registry])

    def _answer(self, challenge: str, url: str) -> str:
        scheme, _, params_text = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self._credentials is None:
                raise HttpStatusError(
                    f"HTTP 401 from {url}: the registry wants credentials",
                    url=url,
                    status=401,
                    headers=Message(),
                )
            return self._credentials.basic()
        if scheme.lower() != "bearer":
            raise OciError(f"{url}: unsupported authentication challenge {scheme!r}", url=url)
        params = dict(_CHALLENGE_PARAM_RE.findall(params_text))
        realm = params.pop("realm", "")
        if not realm:
            raise OciError(f"{url}: bearer challenge without a realm", url=url)
        token_url = urljoin(url, realm)
        query = urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
        if query:
            token_url += ("&" if "?" in token_url else "?") + query
        resp = get(
            token_url,
            authorization=self._credentials.basic() if self._credentials else None,
            limits=self._limits,
            ssl_context=self._ssl,
        )
        try:
            answer = json.loads(resp.body)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError) as exc:
            raise OciError(f"{token_url} did not return a token: {exc}", url=token_url) from exc
        if not token:
            raise OciError(f"{token_url} did not return a token", url=token_url)
        return f"Bearer {token}"


def _next_link(resp: Response) -> str | None:
    link = resp.headers.get("Link")
    if not link or 'rel="next"' not in link:
        return None
    target = link.split(";", 1)[0].strip().strip("<>")
    return urljoin(resp.url, target)
