"""Publishing desired state: one message per changed (class, bundle), nothing more.

The publisher remembers what the stream already holds (read back on start-up,
so a restarted control plane does not republish) and, given the desired map
from targeting, publishes only the differences: a new or changed deployment
for a class, or a tombstone when a bundle stops going to a class that still
exists. Classes that no cluster uses any more are purged after a grace period
rather than tombstoned, so an agent that has not yet seen a new schema never
reads an empty class. Order within one sync: desired state for new classes
first, then the schema, so an agent that moves to a new class finds its state
already there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from nats.js import JetStreamContext

from controlplane.directget import last_per_subject
from controlplane.errors import BusError
from controlplane.targeting import Resolved
from protocol import codec, subjects
from protocol.classes import ClassSchema
from protocol.errors import DecodeError
from protocol.messages import DesiredBundle, SchemaMessage

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (class ID, bundle name)


@dataclass(frozen=True, slots=True)
class Published:
    deployment_id: str
    deleted: bool
    depends_on: tuple[str, ...] = ()
    paused: bool = False

    @classmethod
    def of(cls, resolved: Resolved) -> Published:
        return cls(resolved.deployment_id, False, resolved.depends_on, resolved.paused)


class DesiredPublisher:
    def __init__(self, js: JetStreamContext, *, timeout: float, purge_grace: float) -> None:
        self._js = js
        self._timeout = timeout
        self._purge_grace = purge_grace
        self.published: dict[Key, Published] = {}
        self.schema: ClassSchema | None = None
        self.publishes = 0
        self._rev = 0
        self._orphaned: dict[str, float] = {}  # class ID -> when it lost its last member

    async def load(self) -> None:
        """Read back what the desired-state stream holds."""
        messages = await last_per_subject(
            self._js, subjects.DESIRED_STREAM, ">", timeout=self._timeout
        )
        self.published.clear()
        self.schema = None
        for stored in messages:
            try:
                message = codec.decode_any(stored.data)
            except DecodeError:
                log.warning("desired.load.undecodable", subject=stored.subject)
                continue
            if isinstance(message, SchemaMessage):
                self.schema = message.class_schema
            elif isinstance(message, DesiredBundle):
                parts = stored.subject.split(".")
                if len(parts) == 5 and parts[2] == "desired":
                    key = (parts[3], parts[4])
                    self.published[key] = Published(
                        message.deployment_id,
                        message.deleted,
                        message.depends_on,
                        message.paused,
                    )
                self._rev = max(self._rev, message.rev)
        log.info("desired.loaded", subjects=len(self.published), schema=self.schema)

    def _next_rev(self) -> int:
        self._rev = max(self._rev + 1, time.time_ns())
        return self._rev

    async def _publish(self, subject: str, payload: bytes) -> None:
        try:
            await self._js.publish(subject, payload, timeout=self._timeout)
        except Exception as exc:  # nats raises timeouts and API errors of many types
            raise BusError(f"publishing to {subject} failed: {exc!r}") from exc
        self.publishes += 1

    async def sync(
        self,
        desired: Mapping[Key, Resolved],
        *,
        live_classes: set[str],
        schema: ClassSchema,
    ) -> int:
        """Publish the differences between ``desired`` and what was published."""
        count = 0
        for (class_id, bundle), resolved in desired.items():
            current = self.published.get((class_id, bundle))
            if current == Published.of(resolved):
                continue
            message = DesiredBundle(
                bundle=bundle,
                rev=self._next_rev(),
                deployment_id=resolved.deployment_id,
                options=resolved.options,
                depends_on=resolved.depends_on,
                paused=resolved.paused,
            )
            await self._publish(subjects.desired(class_id, bundle), codec.encode(message))
            self.published[(class_id, bundle)] = Published.of(resolved)
            count += 1
        if self.schema is None or self.schema.keys != schema.keys:
            await self._publish(subjects.SCHEMA, codec.encode(SchemaMessage(class_schema=schema)))
            self.schema = schema
            count += 1
        for key, current in list(self.published.items()):
            class_id, bundle = key
            if class_id not in live_classes:
                self._orphaned.setdefault(class_id, time.monotonic())
                continue
            if key in desired or current.deleted:
                continue
            tombstone = DesiredBundle(bundle=bundle, rev=self._next_rev(), deleted=True)
            await self._publish(subjects.desired(class_id, bundle), codec.encode(tombstone))
            self.published[key] = Published("", True)
            count += 1
        for class_id in [c for c in self._orphaned if c in live_classes]:
            self._orphaned.pop(class_id, None)
        return count

    async def purge_orphans(self, *, live_classes: set[str]) -> int:
        """Purge classes that have had no member for longer than the grace period."""
        now = time.monotonic()
        purged = 0
        for class_id, since in list(self._orphaned.items()):
            if class_id in live_classes:
                self._orphaned.pop(class_id, None)
                continue
            if now - since < self._purge_grace:
                continue
            try:
                await self._js.purge_stream(
                    subjects.DESIRED_STREAM, subject=subjects.desired_class(class_id)
                )
            except Exception as exc:  # nats raises timeouts and API errors of many types
                raise BusError(f"purging class {class_id} failed: {exc!r}") from exc
            for key in [k for k in self.published if k[0] == class_id]:
                del self.published[key]
            self._orphaned.pop(class_id, None)
            purged += 1
            log.info("desired.class.purged", class_id=class_id)
        return purged
