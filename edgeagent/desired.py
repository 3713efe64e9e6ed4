"""The agent's view of its desired state: class and per-cluster messages, ordered by rev.

Two scopes feed it: the agent's label class (``shoal.v1.desired.<class>.*``)
and the cluster itself (``shoal.v1.cluster.<id>.desired.*``); for one bundle
the cluster message wins, and a cluster tombstone hands the bundle back to the
class message. Messages may arrive twice or out of order (live
subscription and snapshot overlap on purpose, so nothing falls between them),
so each scope keeps the highest ``rev`` per bundle, tombstones included, so a
late older message cannot resurrect a deleted bundle.

A snapshot merges into a scope by rev: it never takes away a bundle the scope
already holds at a higher rev. Removal always arrives as a tombstone (a
message with a higher rev), never as an absence, so a snapshot that misses a
message JetStream was still storing while the live copy was delivered cannot
remove a bundle by surprise.
"""

from __future__ import annotations

from enum import StrEnum

from edgeagent.store import SavedDesired
from protocol.classes import ClassSchema
from protocol.codec import decode
from protocol.messages import DesiredBundle


class Scope(StrEnum):
    CLASS = "class"
    CLUSTER = "cluster"


class DecodedMessages:
    """Desired-state messages decoded once per payload, per process.

    Every agent of a label class receives the class's message; decoding is pure
    and the models are frozen, so in a process that runs many agents (a
    simulated fleet) one decode serves them all, as :class:`ParseCache` does
    for rendering. A lone agent keeps its own small one. Bounded: the oldest
    entries go first; a payload that does not decode is never kept.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: dict[bytes, DesiredBundle] = {}

    def decode(self, data: bytes) -> DesiredBundle:
        """The message in ``data``; :class:`DecodeError` if it is not one."""
        message = self._entries.get(data)
        if message is None:
            message = decode(data, DesiredBundle)
            if len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            self._entries[bytes(data)] = message
        return message


def _newer(candidate: DesiredBundle, current: DesiredBundle | None) -> bool:
    return current is None or candidate.rev > current.rev


class DesiredState:
    """Per-scope last messages and the effective bundle -> DesiredBundle map."""

    def __init__(self, saved: SavedDesired | None = None) -> None:
        saved = saved or SavedDesired()
        self.class_id = saved.class_id
        self.schema: ClassSchema | None = saved.schema
        self._scopes: dict[Scope, dict[str, DesiredBundle]] = {
            Scope.CLASS: dict(saved.class_bundles),
            Scope.CLUSTER: dict(saved.cluster_bundles),
        }
        self._touched: dict[Scope, set[str] | None] = {Scope.CLASS: None, Scope.CLUSTER: None}

    def effective(self) -> dict[str, DesiredBundle]:
        """Bundle -> the message that governs it; tombstones removed.

        A per-cluster tombstone withdraws the cluster's override: the class
        message (if any) governs the bundle again.
        """
        names = dict.fromkeys([*self._scopes[Scope.CLASS], *self._scopes[Scope.CLUSTER]])
        return {n: m for n in names if (m := self._governing(n)) is not None}

    def offer(self, scope: Scope, message: DesiredBundle) -> bool:
        """Take a live message; True if the effective state changed."""
        bundles = self._scopes[scope]
        touched = self._touched[scope]
        if touched is not None:
            touched.add(message.bundle)
        if not _newer(message, bundles.get(message.bundle)):
            return False
        before = self._governing(message.bundle)
        bundles[message.bundle] = message
        after = self._governing(message.bundle)
        return after is not before and after != before

    def _governing(self, bundle: str) -> DesiredBundle | None:
        """The message that governs ``bundle``: the cluster's, else the class's; not tombstones."""
        for scope in (Scope.CLUSTER, Scope.CLASS):
            message = self._scopes[scope].get(bundle)
            if message is not None and not message.deleted:
                return message
        return None

    def begin_snapshot(self, scope: Scope) -> None:
        """Start recording live messages for ``scope`` until :meth:`end_snapshot`."""
        self._touched[scope] = set()

    def end_snapshot(self, scope: Scope, messages: list[DesiredBundle]) -> bool:
        """Replace ``scope`` by a snapshot; True if the effective state changed."""
        self._touched[scope] = None
        new: dict[str, DesiredBundle] = {}
        for message in messages:
            if _newer(message, new.get(message.bundle)):
                new[message.bundle] = message
        for name, held in self._scopes[scope].items():
            if _newer(held, new.get(name)):
                new[name] = held
        before = self.effective()
        self._scopes[scope] = new
        return self.effective() != before

    def reset_class(self, class_id: str) -> bool:
        """Move to another class: its bundles come with the next snapshot."""
        if class_id == self.class_id:
            return False
        self.class_id = class_id
        before = self.effective()
        self._scopes[Scope.CLASS] = {}
        return self.effective() != before

    def saved(self) -> SavedDesired:
        return SavedDesired(
            class_id=self.class_id,
            schema=self.schema,
            class_bundles=dict(self._scopes[Scope.CLASS]),
            cluster_bundles=dict(self._scopes[Scope.CLUSTER]),
        )
