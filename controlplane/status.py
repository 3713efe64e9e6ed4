"""Status aggregation: per-bundle counts per state, maintained incrementally.

Each cluster's last report is kept as ``bundle -> (deployment ID, state)``.
Counts are kept per bundle and per ``(deployment ID, state)`` over online
clusters, adjusted by the difference each report makes, so a report costs
O(bundles in it) and a summary costs O(deployments of the bundle), never a
scan of the fleet. A summary compares the counts with what is expected: the
number of clusters whose class is targeted, from the class sizes. Clusters
that are targeted but report nothing for the current deployment are
WaitApplied, or OutOfSync when they still report an older deployment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from controlplane.registry import ClusterRecord, Registry
from controlplane.targeting import Resolved
from protocol.messages import StatusReport
from protocol.states import State

Desired = Mapping[tuple[str, str], Resolved]


class StatusBook:
    def __init__(self) -> None:
        self.counts: dict[str, Counter[tuple[str, State]]] = {}
        self._interned: dict[str, str] = {}

    def _intern(self, value: str) -> str:
        return self._interned.setdefault(value, value)

    def _add(self, record: ClusterRecord, sign: int) -> None:
        for bundle, key in record.reported.items():
            counter = self.counts.setdefault(bundle, Counter())
            counter[key] += sign
            if counter[key] <= 0:
                del counter[key]

    def apply_report(self, record: ClusterRecord, report: StatusReport) -> bool:
        """Take a cluster's report; returns False if it is older than one already seen."""
        key = (report.sent_at, report.seq)
        if key <= record.status_key:
            return False
        record.status_key = key
        if not record.offline:
            self._add(record, -1)
        record.reported = {
            self._intern(s.bundle): (self._intern(s.deployment_id), s.state) for s in report.bundles
        }
        if not record.offline:
            self._add(record, +1)
        return True

    def set_offline(self, registry: Registry, record: ClusterRecord, offline: bool) -> None:
        if record.offline == offline:
            return
        self._add(record, -1 if offline else +1)
        registry.set_offline(record, offline)

    def forget(self, record: ClusterRecord) -> None:
        if not record.offline:
            self._add(record, -1)
        record.reported = {}

    def partial_counts(self) -> dict[str, tuple[tuple[str, State, int], ...]]:
        """This replica's counts, for the fleet-wide summary (see :func:`summarise`)."""
        return {
            bundle: tuple((dep, state, n) for (dep, state), n in counter.items())
            for bundle, counter in self.counts.items()
            if counter
        }

    @staticmethod
    def cluster_states(
        class_id: str,
        reported_states: Mapping[str, tuple[str, State]],
        desired: Desired,
        bundles: list[str],
    ) -> dict[str, State]:
        """bundle -> state for the bundles that target a cluster of ``class_id``."""
        out: dict[str, State] = {}
        for bundle in bundles:
            resolved = desired.get((class_id, bundle))
            if resolved is None:
                continue
            reported = reported_states.get(bundle)
            if reported is None:
                out[bundle] = State.WAIT_APPLIED
            elif reported[0] != resolved.deployment_id:
                out[bundle] = State.OUT_OF_SYNC
            else:
                out[bundle] = reported[1]
        return out


def summarise(
    bundle: str,
    counts: Mapping[tuple[str, State], int],
    registry: Registry,
    class_offline: Mapping[str, int],
    desired: Desired,
) -> tuple[dict[State, int], int, list[str]]:
    """(state -> count, clusters targeted, deployment IDs) for one bundle.

    ``counts`` are the fleet's online clusters per (deployment ID, state) for the
    bundle and ``class_offline`` the offline clusters per class, both summed over
    the replicas that own the shards; class sizes come from the registry, which
    every replica holds whole.
    """
    expected: Counter[str] = Counter()
    offline: Counter[str] = Counter()
    for label_class in registry.classes.values():
        resolved = desired.get((label_class.id, bundle))
        if resolved is None:
            continue
        expected[resolved.deployment_id] += len(label_class.members)
        offline[resolved.deployment_id] += class_offline.get(label_class.id, 0)
    states: Counter[State] = Counter()
    stale = sum(n for (dep, _), n in counts.items() if dep not in expected)
    for dep, total in expected.items():
        reported = 0
        for (counted_dep, state), n in counts.items():
            if counted_dep == dep:
                states[state] += n
                reported += n
        waiting = max(0, total - offline[dep] - reported)
        out_of_sync = min(waiting, stale)
        stale -= out_of_sync
        states[State.OUT_OF_SYNC] += out_of_sync
        states[State.WAIT_APPLIED] += waiting - out_of_sync
        states[State.OFFLINE] += offline[dep]
    result = {state: n for state, n in states.items() if n > 0}
    return result, sum(expected.values()), sorted(expected)


class Liveness:
    """Heartbeat deadlines in one-second buckets: a sweep touches only overdue ones."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._buckets: dict[int, set[str]] = {}
        self._bucket_of: dict[str, int] = {}

    def seen(self, cluster_id: str, now: float) -> None:
        bucket = int(now + self._timeout) + 1
        old = self._bucket_of.get(cluster_id)
        if old == bucket:
            return
        if old is not None:
            members = self._buckets.get(old)
            if members is not None:
                members.discard(cluster_id)
        self._buckets.setdefault(bucket, set()).add(cluster_id)
        self._bucket_of[cluster_id] = bucket

    def overdue(self, now: float) -> list[str]:
        """Clusters whose deadline passed since the last call; they are forgotten."""
        out: list[str] = []
        for bucket in [b for b in self._buckets if b <= now]:
            for cluster_id in self._buckets.pop(bucket):
                if self._bucket_of.get(cluster_id) == bucket:
                    del self._bucket_of[cluster_id]
                    out.append(cluster_id)
        return out

    def forget(self, cluster_id: str) -> None:
        bucket = self._bucket_of.pop(cluster_id, None)
        if bucket is not None:
            self._buckets.get(bucket, set()).discard(cluster_id)
