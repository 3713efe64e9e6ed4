"""The adapter between the Kubernetes backend and the API server.

Everything the backend sends goes through :class:`KubeClient`: plain JSON
over kubernetes-asyncio's ``ApiClient``, which brings the credentials of a
kubeconfig or of the pod's service account (client certificates, bearer
tokens, exec plugins, token refresh) and TLS. The generated typed API is not
used (see :mod:`edgeagent.kube.loader`): the backend applies whatever kinds a
bundle holds, so it works on dicts and finds paths through discovery.

This is the one place where kubernetes-asyncio and aiohttp errors exist; they
leave as :class:`edgeagent.kube.errors.ApiError` with the API's status,
reason and message (or :class:`ApiUnreachable` for a connection that failed).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from edgeagent.kube import loader
from edgeagent.kube.errors import ApiError, ApiUnreachable, KubeConfigError
from edgeagent.settings import AgentSettings

log = structlog.get_logger(__name__)

JsonObject = dict[str, Any]
Query = Sequence[tuple[str, str]]

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
_JSON = "application/json"


def _error(method: str, path: str, status: int, body: bytes) -> ApiError:
    """The API's ``Status`` message if it sent one, else the HTTP status."""
    reason, message = "", ""
    try:
        status_obj = json.loads(body)
        if isinstance(status_obj, dict):
            reason = str(status_obj.get("reason") or "")
            message = str(status_obj.get("message") or "")
    except ValueError:
        message = body[:200].decode("utf-8", "replace").strip()
    return ApiError(
        message or f"{method} {path}: HTTP {status} {reason}".strip(), status=status, reason=reason
    )


class KubeClient:
    """JSON requests and watch streams to one API server; see the module docstring."""

    def __init__(self, api: Any, *, settings: AgentSettings) -> None:
        self._api = api
        self._settings = settings

    @classmethod
    async def connect(cls, kubeconfig: Path | None, *, settings: AgentSettings) -> KubeClient:
        """A client from ``kubeconfig``, or from the in-cluster service account if None."""
        api_client_cls, configuration_cls, kube_config, incluster = loader.load()
        configuration = configuration_cls()
        try:
            if kubeconfig is None:
                incluster.load_incluster_config(client_configuration=configuration)
            else:
                await kube_config.load_kube_config(
                    config_file=str(kubeconfig), client_configuration=configuration
                )
        except Exception as exc:  # ConfigException, OSError, YAML errors: all mean "no config"
            where = str(kubeconfig) if kubeconfig else "the in-cluster service account"
            raise KubeConfigError(f"cannot load Kubernetes config from {where}: {exc}") from exc
        log.info("kube.connected", server=configuration.host)
        return cls(api_client_cls(configuration=configuration), settings=settings)

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Any = None,
        content_type: str = _JSON,
        timeout: aiohttp.ClientTimeout | float,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": _JSON, "Content-Type": content_type}
        try:
            response: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiUnreachable(f"{method} {path}: {exc!r}") from exc
        except Exception as exc:  # kubernetes-asyncio's own (credential refresh and such)
            raise ApiUnreachable(f"{method} {path}: {exc}") from exc
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: Any = None,
        content_type: str = _JSON,
    ) -> JsonObject:
        """One request; the decoded JSON answer, or ApiError."""
        response = await self._send(
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            timeout=self._settings.kube_request_timeout,
        )
        try:
            async with response:
                data = await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiUnreachable(f"{method} {path}: {exc!r}") from exc
        if response.status >= 400:
            raise _error(method, path, response.status, data)
        try:
            decoded = json.loads(data) if data else {}
        except ValueError as exc:
            raise ApiError(f"{method} {path}: answer is not JSON", status=502) from exc
        if not isinstance(decoded, dict):
            raise ApiError(f"{method} {path}: answer is not a JSON object", status=502)
        return decoded

    async def get(self, path: str, *, query: Query = ()) -> JsonObject | None:
        """The object at ``path``, or None if there is none (404)."""
        try:
            return await self.request("GET", path, query=query)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def stream(self, path: str, *, query: Query = ()) -> AsyncIterator[JsonObject]:
        """The events of a watch (``watch=true`` is added); ends when the server ends it."""
        timeout = aiohttp.ClientTimeout(
            sock_connect=self._settings.kube_request_timeout,
            sock_read=self._settings.kube_watch_timeout + self._settings.kube_request_timeout,
        )
        response = await self._send("GET", path, query=[*query, ("watch", "true")], timeout=timeout)
        async with response:
            if response.status >= 400:
                raise _error("GET", path, response.status, await response.read())
            try:
                async for line in response.content:
                    if line.strip():
                        event = json.loads(line)
                        if isinstance(event, dict):
                            yield event
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise ApiUnreachable(f"watch {path}: {exc!r}") from exc
            except ValueError as exc:
                raise ApiError(f"watch {path}: event is not JSON", status=502) from exc
