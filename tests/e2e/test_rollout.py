"""End to end: a real `shoal server`, real `shoal agent` processes, the CLI as a user runs it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest

from protocol import codec, subjects
from protocol.messages import StatusReport
from tests.e2e.conftest import write_bundle
from tests.e2e.harness import Shoal, wait_for

pytestmark = pytest.mark.e2e

AGENTS = {
    "shop-prod-eu": "env=prod,region=eu",
    "shop-prod-us": "env=prod,region=us",
    "shop-dev-eu": "env=dev,region=eu",
}


def start_fleet(shoal: Shoal) -> None:
    token = shoal.token()
    for name, labels in AGENTS.items():
        shoal.start_agent(name, labels, token)
    wait_for(lambda: set(shoal.clusters()) == set(AGENTS), what="agents to register")


def converged(shoal: Shoal, bundle: str, names: set[str]) -> dict[str, Any] | None:
    """The bundle's summary once exactly ``names`` run it and all are Ready."""
    clusters = shoal.clusters()
    running = {n for n, c in clusters.items() if bundle in c["bundles"]}
    if running != names:
        return None
    if any(clusters[n]["bundles"][bundle] != "Ready" for n in names):
        return None
    summary = shoal.bundles().get(bundle)
    if summary is None or summary["states"] != {"Ready": len(names)}:
        return None
    return summary


async def last_reports(url: str) -> dict[str, StatusReport]:
    """Each cluster's last status report, straight from the status stream."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        out: dict[str, StatusReport] = {}
        info = await js.stream_info(subjects.STATUS_STREAM)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(subjects.STATUS_STREAM, seq)
            except Exception:  # deleted: superseded by a newer report
                continue
            _, cluster_id = subjects.parse_cluster_subject(msg.subject or "")
            out[cluster_id] = codec.decode(msg.data or b"", StatusReport)
        return out
    finally:
        await nc.close()


def test_bundle_reaches_matching_clusters_updates_and_deletes(shoal: Shoal, tmp_path: Path) -> None:
    start_fleet(shoal)
    bundle_dir = write_bundle(tmp_path / "web", tag="1.27")
    out = shoal.cli("apply", str(bundle_dir), "--name", "web", "--target", "env=prod")
    assert "bundle/web configured" in out.stdout

    prod = {"shop-prod-eu", "shop-prod-us"}
    first = wait_for(lambda: converged(shoal, "web", prod), what="web on prod clusters")
    assert shoal.clusters()["shop-dev-eu"]["bundles"] == {}

    # Changed content converges everywhere to the new deployment ID.
    write_bundle(bundle_dir, tag="1.28")
    shoal.cli("apply", str(bundle_dir), "--name", "web", "--target", "env=prod")
    second = wait_for(
        lambda: (
            (s := converged(shoal, "web", prod))
            and s["deployment_id"] != first["deployment_id"]
            and s
        ),
        what="the new deployment ID on every prod cluster",
    )
    reports = asyncio.run(last_reports(shoal.url))
    ids = {c["id"]: n for n, c in shoal.clusters().items()}
    for cluster_id, report in reports.items():
        deployed = {b.bundle: b.deployment_id for b in report.bundles}
        if ids[cluster_id] in prod:
            assert deployed == {"web": second["deployment_id"]}

    # Re-applying unchanged content is a no-op.
    again = shoal.cli("apply", str(bundle_dir), "--name", "web", "--target", "env=prod")
    assert "unchanged" in again.stdout

    # Delete removes it from every cluster: agents report they no longer hold it.
    shoal.cli("delete", "bundle", "web")

    wait_for(
        lambda: all(not r.bundles for r in asyncio.run(last_reports(shoal.url)).values()),
        what="agents to report they no longer hold the deleted bundle",
    )
    assert shoal.bundles() == {}
    assert all(c["bundles"] == {} for c in shoal.clusters().values())


def test_agent_killed_during_update_converges_from_the_bus(shoal: Shoal, tmp_path: Path) -> None:
    token = shoal.token()
    shoal.start_agent("shop-1", "env=prod", token)
    shoal.start_agent("shop-2", "env=prod", token)
    bundle_dir = write_bundle(tmp_path / "web", tag="1")
    shoal.cli("apply", str(bundle_dir), "--name", "web")
    wait_for(lambda: converged(shoal, "web", {"shop-1", "shop-2"}), what="v1 everywhere")

    write_bundle(bundle_dir, tag="2")
    shoal.cli("apply", str(bundle_dir), "--name", "web")
    shoal.stop("shop-2", kill=True)  # killed mid-update
    write_bundle(bundle_dir, tag="3")
    shoal.cli("apply", str(bundle_dir), "--name", "web")
    latest = shoal.bundles()["web"]["deployment_id"]
    wait_for(
        lambda: (
            shoal.clusters()["shop-1"]["bundles"].get("web") == "Ready"
            and shoal.bundles()["web"]["deployment_id"] == latest
        ),
        what="v3 on the surviving agent",
    )
    assert shoal.clusters()["shop-2"]["bundles"]["web"] != "Ready"

    # Restarted later with the same state dir, no token needed: it reads the bus.
    shoal.start_agent("shop-2", "env=prod", "")
    summary = wait_for(lambda: converged(shoal, "web", {"shop-1", "shop-2"}), what="v3 on both")
    assert summary["deployment_id"] == latest


def test_restarted_control_plane_keeps_bundles_clusters_and_tokens(
    shoal: Shoal, tmp_path: Path
) -> None:
    token = shoal.token()
    shoal.start_agent("shop-1", "env=prod", token)
    shoal.cli("apply", str(write_bundle(tmp_path / "web")), "--name", "web")
    before = wait_for(lambda: converged(shoal, "web", {"shop-1"}), what="web Ready")

    shoal.stop("server")
    shoal.start_server()

    after = wait_for(lambda: converged(shoal, "web", {"shop-1"}), what="state after restart")
    assert after["deployment_id"] == before["deployment_id"]
    assert set(shoal.clusters()) == {"shop-1"}
    # The token created before the restart still registers a new cluster.
    shoal.start_agent("shop-2", "env=prod", token)
    wait_for(lambda: converged(shoal, "web", {"shop-1", "shop-2"}), what="new agent with old token")
