"""Status aggregation: counts per class and deployment, summaries, liveness deadlines."""

from __future__ import annotations

from typing import Any, cast

from controlplane.registry import Registry, StoredCluster
from controlplane.status import INTERN_SWEEP_FROM, Liveness, StatusBook, summarise
from controlplane.targeting import Resolved
from protocol.classes import schema_from_selectors
from protocol.messages import BundleStatus, StatusReport
from protocol.models import DeploymentOptions
from protocol.selectors import parse_selector
from protocol.states import State


def registry_with(*clusters: tuple[str, dict[str, str]]) -> Registry:
    registry = Registry(cast(Any, None))  # index() keeps to memory
    registry.set_schema(schema_from_selectors([parse_selector("env in (a,b)")], epoch=1))
    for name, labels in clusters:
        registry.index(
            StoredCluster(
                id=name, name=name, labels=labels, shard=0, secret_sha256="", registered_at=0
            )
        )
    return registry


def report(*bundles: tuple[str, str, State]) -> StatusReport:
    return StatusReport(
        seq=1,
        sent_at=0,
        bundles=tuple(BundleStatus(bundle=b, deployment_id=d, state=s) for b, d, s in bundles),
    )


def test_a_cluster_running_another_class_deployment_is_out_of_sync() -> None:
    registry = registry_with(("x", {"env": "a"}), ("y", {"env": "b"}))
    class_a = registry.clusters["x"].class_id
    class_b = registry.clusters["y"].class_id
    desired = {
        (class_a, "web"): Resolved("d1", DeploymentOptions()),
        (class_b, "web"): Resolved("d2", DeploymentOptions()),
    }
    book = StatusBook()
    book.apply_report(registry.clusters["x"], report(("web", "d1", State.READY)), seq=1)
    book.apply_report(registry.clusters["y"], report(("web", "d1", State.READY)), seq=2)

    states, targeted, deployments = summarise("web", book.counts["web"], registry, {}, desired)

    assert states == {State.READY: 1, State.OUT_OF_SYNC: 1}
    assert targeted == 2
    assert deployments == ["d1", "d2"]


def test_counts_follow_a_cluster_that_changes_class() -> None:
    registry = registry_with(("x", {"env": "a"}))
    book = StatusBook()
    registry.on_move = book.move
    record = registry.clusters["x"]
    book.apply_report(record, report(("web", "d1", State.READY)), seq=1)

    registry.index(record.stored.model_copy(update={"labels": {"env": "b"}}))

    assert set(book.counts["web"]) == {(record.class_id, "d1", State.READY)}
    assert record.reported_map() == {"web": ("d1", State.READY)}


def test_older_reports_are_ignored_and_offline_clusters_are_not_counted() -> None:
    registry = registry_with(("x", {"env": "a"}))
    record = registry.clusters["x"]
    book = StatusBook()
    assert book.apply_report(record, report(("web", "d1", State.READY)), seq=5)
    assert not book.apply_report(record, report(("web", "d1", State.NOT_READY)), seq=4)
    book.set_offline(registry, record, True)
    assert not book.counts["web"]
    book.set_offline(registry, record, False)
    assert book.counts["web"] == {(record.class_id, "d1", State.READY): 1}


def test_liveness_reports_each_overdue_cluster_once() -> None:
    registry = registry_with(("a", {}), ("b", {}))
    a, b = registry.clusters["a"], registry.clusters["b"]
    liveness = Liveness(timeout=10)
    liveness.seen(a, now=100)
    liveness.seen(b, now=105)
    assert liveness.overdue(105) == []
    assert liveness.overdue(112) == [a]
    liveness.seen(b, now=112)  # a heartbeat pushes the deadline out
    assert liveness.overdue(118) == []
    assert liveness.overdue(125) == [b]
    assert liveness.overdue(200) == []


def test_a_record_keeps_labels_packed_and_gives_back_its_registration() -> None:
    stored = StoredCluster(
        id="c1",
        name="shop-1",
        labels={"env": "prod", "shop": "0001"},
        shard=3,
        secret_sha256="ab" * 32,
        registered_at=1.5,
    )
    registry = Registry(cast(Any, None))
    record, created = registry.index(stored)

    assert created
    assert record.labels == {"env": "prod", "shop": "0001"}
    assert record.stored == stored
    assert registry.get_by_name("shop-1") is record


def test_counts_always_equal_a_recount_of_what_each_cluster_reported_last() -> None:
    """Reports that change part of a cluster's status, repeat an entry, go offline and back."""
    registry = registry_with(("x", {"env": "a"}), ("y", {"env": "b"}))
    book = StatusBook()
    x, y = registry.clusters["x"], registry.clusters["y"]
    base = ("base", "d0", State.READY)
    steps = [
        (x, report(base, ("web", "d1", State.NOT_READY))),
        (y, report(base, ("web", "d1", State.READY))),
        (x, report(base, ("web", "d1", State.READY))),
        (x, report(base, base, ("web", "d1", State.READY))),  # a status listed twice
        (y, report(("web", "d2", State.READY))),  # base no longer reported
        (x, report()),
        (x, report(base, ("web", "d2", State.MODIFIED), ("web", "d2", State.READY))),
    ]
    for seq, (record, sent) in enumerate(steps, start=1):
        if seq == 5:
            book.set_offline(registry, y, True)
        if seq == 6:
            book.set_offline(registry, y, False)
        assert book.apply_report(record, sent, seq=seq)
        recount: dict[str, dict[tuple[str, str, State], int]] = {}
        for cluster in (x, y):
            if cluster.offline:
                continue
            for bundle, deployment, state in set(cluster.reported):
                per_bundle = recount.setdefault(bundle, {})
                key = (cluster.class_id, deployment, state)
                per_bundle[key] = per_bundle.get(key, 0) + 1
        counted = {bundle: dict(c) for bundle, c in book.counts.items() if c}
        assert counted == recount, f"after step {seq}"


def test_statuses_of_deployments_no_cluster_runs_any_more_are_not_kept_forever() -> None:
    registry = registry_with(("x", {"env": "a"}), ("y", {"env": "b"}))
    x, y = registry.clusters["x"], registry.clusters["y"]
    book = StatusBook()
    book.apply_report(y, report(("db", "kept", State.READY)), seq=1)
    for n in range(3 * INTERN_SWEEP_FROM):  # a long life of rollouts on x
        book.apply_report(x, report(("web", f"d{n}", State.READY)), seq=n + 2)

    assert len(book._interned) <= INTERN_SWEEP_FROM
    assert ("db", "kept", State.READY) in book._interned
    last = f"d{3 * INTERN_SWEEP_FROM - 1}"
    assert book.counts["web"] == {(x.class_id, last, State.READY): 1}
    assert book.counts["db"] == {(y.class_id, "kept", State.READY): 1}
