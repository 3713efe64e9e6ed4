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
from collections.abc import Iterable, Mapping

from controlplane.registry import ClusterRecord, Registry, Reported
from controlplane.targeting import Resolved
from protocol.messages import StatusReport
from protocol.states import State

Desired = Mapping[tuple[str, str], Resolved]
INTERN_SWEEP_FROM = 4096  # interned statuses held before the first sweep


class StatusBook:
    def __init__(self) -> None:
        # bundle -> (class ID, deployment ID, state) -> online clusters
        self.counts: dict[str, Counter[tuple[str, str, State]]] = {}
        # One shared tuple per (bundle, deployment, state): records point at these.
        self._interned: dict[Reported, Reported] = {}
        self._sweep_at = INTERN_SWEEP_FROM

    def _intern(self, value: Reported) -> Reported:
        found = self._interned.get(value)
        if found is None:
            if len(self._interned) >= self._sweep_at:
                self._sweep()
            found = self._interned[value] = value
        return found

    def _sweep(self) -> None:
        """Forget the interned statuses no online cluster reports any more.

        Every deployment ever rolled out leaves its states here: a control
        plane that runs for months would keep them all. What an offline
        cluster still holds stays valid (tuples compare by value); only the
        sharing is lost for it. The next sweep waits until the table has
        doubled, so interning stays O(1) over time.
        """
        live = {(b, d, s) for b, counter in self.counts.items() for (_, d, s) in counter}
        self._interned = {key: key for key in self._interned if key in live}
        self._sweep_at = max(INTERN_SWEEP_FROM, 2 * len(self._interned))

    def _add(self, record: ClusterRecord, sign: int, class_id: str | None = None) -> None:
        label_class = record.class_id if class_id is None else class_id
        self._count(label_class, record.reported, sign)

    def _count(self, label_class: str, reported: Iterable[Reported], sign: int) -> None:
        for bundle, deployment, state in reported:
            counter = self.counts.get(bundle)
            if counter is None:  # not setdefault: no Counter built per call on the ingest path
                counter = self.counts[bundle] = Counter()
            key = (label_class, deployment, state)
            counter[key] += sign
            if counter[key] <= 0:
                del counter[key]

    def move(self, record: ClusterRecord, old_class: str) -> None:
        """The cluster changed class: its contributions follow it."""
        if not record.offline and record.reported:
            self._add(record, -1, old_class)
            self._add(record, +1)

    def apply_report(self, record: ClusterRecord, report: StatusReport, *, seq: int) -> bool:
        """Take a cluster's report; returns False if it is not newer than one already taken.

        ``seq`` is the report's stream sequence: it orders one cluster's reports
        whatever the agent's clock says (edge devices' clocks jump).
        """
        if seq <= record.status_key:
            return False
        record.status_key = seq
        record.report_seq = max(record.report_seq, report.seq)
        before = record.reported
        # Without repeats (a status listed twice is one fact), so the two
        # differences below are exact.
        record.reported = tuple(
            dict.fromkeys(
                self._intern((s.bundle, s.deployment_id, s.state)) for s in report.bundles
            )
        )
        if not record.offline and record.reported != before:
            # Only what changed moves between counts: most of a report is as before.
            self._count(record.class_id, [r for r in before if r not in record.reported], -1)
            self._count(record.class_id, [r for r in record.reported if r not in before], +1)
        return True

    def set_offline(self, registry: Registry, record: ClusterRecord, offline: bool) -> None:
        if record.offline == offline:
            return
        self._add(record, -1 if offline else +1)
        registry.set_offline(record, offline)

    def forget(self, record: ClusterRecord) -> None:
        if not record.offline:
            self._add(record, -1)
        record.reported = ()

    def partial_counts(self) -> dict[str, tuple[tuple[str, str, State, int], ...]]:
        """This replica's counts, for the fleet-wide summary (see :func:`summarise`)."""
        return {
            bundle: tuple((cls, dep, state, n) for (cls, dep, state), n in counter.items())
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
    counts: Mapping[tuple[str, str, State], int],
    registry: Registry,
    class_offline: Mapping[str, int],
    desired: Desired,
) -> tuple[dict[State, int], int, list[str]]:
    """(state -> count, clusters targeted, deployment IDs) for one bundle.

    ``counts`` are the fleet's online clusters per (class, deployment ID, state)
    for the bundle and ``class_offline`` the offline clusters per class, both
    summed over the replicas that own the shards; class sizes come from the
    registry, which every replica holds whole. Per class: clusters reporting the
    class's deployment count in their state, clusters still reporting another
    deployment are OutOfSync, and the rest (online, silent) are WaitApplied.
    """
    by_class: dict[str, list[tuple[str, State, int]]] = {}
    for (class_id, deployment, state), n in counts.items():
        by_class.setdefault(class_id, []).append((deployment, state, n))
    states: Counter[State] = Counter()
    targeted = 0
    deployments: set[str] = set()
    for label_class in registry.classes.values():
        resolved = desired.get((label_class.id, bundle))
        if resolved is None:
            continue
        deployments.add(resolved.deployment_id)
        total = len(label_class.members)
        offline = class_offline.get(label_class.id, 0)
        targeted += total
        current = stale = 0
        for deployment, state, n in by_class.get(label_class.id, ()):
            if deployment == resolved.deployment_id:
                states[state] += n
                current += n
            else:
                stale += n
        waiting = max(0, total - offline - current)
        out_of_sync = min(waiting, stale)
        states[State.OUT_OF_SYNC] += out_of_sync
        states[State.WAIT_APPLIED] += waiting - out_of_sync
        states[State.OFFLINE] += offline
    return {s: n for s, n in states.items() if n > 0}, targeted, sorted(deployments)


class Liveness:
    """Heartbeat deadlines in one-second buckets: a sweep touches only overdue ones.

    A cluster's bucket is kept in its record (``deadline``), so tracking costs
    one set entry per cluster and nothing more.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._buckets: dict[int, set[ClusterRecord]] = {}

    def seen(self, record: ClusterRecord, now: float) -> None:
        bucket = int(now + self._timeout) + 1
        if record.deadline == bucket:
            return
        self.forget(record)
        self._buckets.setdefault(bucket, set()).add(record)
        record.deadline = bucket

    def overdue(self, now: float) -> list[ClusterRecord]:
        """Clusters whose deadline passed since the last call; they are forgotten."""
        out: list[ClusterRecord] = []
        for bucket in [b for b in self._buckets if b <= now]:
            for record in self._buckets.pop(bucket):
                if record.deadline == bucket:
                    record.deadline = 0
                    out.append(record)
        return out

    def forget(self, record: ClusterRecord) -> None:
        if record.deadline:
            members = self._buckets.get(record.deadline)
            if members is not None:
                members.discard(record)
            record.deadline = 0
