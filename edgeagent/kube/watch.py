"""Drift watches: learn at once when someone changes or deletes what shoal applied.

Polling every applied object would cost the API server a request per object
per interval on every cluster; a watch costs one idle connection per kind.
For each kind shoal has applied there is one watch over all namespaces,
label-selected on ``shoal.dev/bundle`` so it sees only shoal's objects. It
lists first (the list's resourceVersion is where the watch starts), then
watches from the last resourceVersion seen. The API ends a watch after
``timeoutSeconds`` and the loop re-watches from where it was; ``410 Gone``
(the server forgot that version) and dropped connections make it list again,
with a doubling pause after failures.

The watch does not decide anything. Every object it sees (listed, added,
modified, deleted) goes to ``on_event``; the backend compares it with what
it applied and wakes the reconciler only when that changes the verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from edgeagent.kube.apply import BUNDLE_LABEL
from edgeagent.kube.client import KubeClient
from edgeagent.kube.discovery import Resource
from edgeagent.kube.errors import ApiError
from edgeagent.settings import AgentSettings
from edgeagent.tasks import TaskSet

log = structlog.get_logger(__name__)

# on_event(resource, "ADDED" | "MODIFIED" | "DELETED", object)
EventHandler = Callable[[Resource, str, dict[str, Any]], None]


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class DriftWatch:
    """One supervised watch per kind; see the module docstring."""

    def __init__(
        self, client: KubeClient, *, settings: AgentSettings, on_event: EventHandler
    ) -> None:
        self._client = client
        self._settings = settings
        self._on_event = on_event
        self._tasks = TaskSet("kube-watch")
        self._watches: dict[Resource, asyncio.Task[None]] = {}
        self.relists = 0

    @property
    def watched(self) -> frozenset[Resource]:
        return frozenset(self._watches)

    def ensure(self, resources: set[Resource]) -> None:
        """Watch exactly ``resources``: start the missing watches, stop the others."""
        for resource in set(self._watches) - resources:
            self._watches.pop(resource).cancel()
        for resource in resources - set(self._watches):
            name = f"watch:{resource.plural}.{resource.group or 'core'}"
            self._watches[resource] = self._tasks.spawn(name, self._run(resource))

    async def close(self) -> None:
        self._watches.clear()
        await self._tasks.cancel_all()

    async def _run(self, resource: Resource) -> None:
        s = self._settings
        pause = s.kube_watch_retry_initial
        selector = ("labelSelector", BUNDLE_LABEL)
        bound = log.bind(resource=resource.plural, group=resource.group)
        while True:
            try:
                listing = await self._client.request("GET", resource.path(), query=[selector])
                self.relists += 1
                for obj in listing.get("items") or []:
                    self._on_event(resource, "ADDED", obj)
                version = str((listing.get("metadata") or {}).get("resourceVersion", ""))
                pause = s.kube_watch_retry_initial
                while True:  # each round ends when the server closes the watch
                    version = await self._watch(resource, version, selector)
            except _Gone:
                bound.info("kube.watch_expired")
                continue
            except ApiError as exc:
                if exc.gone:
                    bound.info("kube.watch_expired")
                    continue
                bound.warning("kube.watch_failed", error=str(exc), retry_in=pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, s.kube_watch_retry_max)

    async def _watch(self, resource: Resource, version: str, selector: tuple[str, str]) -> str:
        query = [
            selector,
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(int(self._settings.kube_watch_timeout))),
        ]
        async for event in self._client.stream(resource.path(), query=query):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Gone
                raise ApiError(
                    f"watch error: {obj.get('message', obj)}",
                    status=int(obj.get("code") or 500),
                    reason=str(obj.get("reason", "")),
                )
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._on_event(resource, str(kind), obj)
        return version
