"""End to end: bad input gets a clear error naming the file, field or subject; nothing changes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from protocol import subjects
from tests.e2e.conftest import write_bundle
from tests.e2e.harness import Shoal, wait_for

pytestmark = pytest.mark.e2e


def test_bad_bundles_and_selectors_are_refused_whole(shoal: Shoal, tmp_path: Path) -> None:
    good = write_bundle(tmp_path / "good")
    shoal.cli("apply", str(good), "--name", "web")
    before = shoal.bundles()["web"]["deployment_id"]

    broken = write_bundle(tmp_path / "broken")
    (broken / "zz-bad.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n")
    result = shoal.cli("apply", str(broken), "--name", "web", check=False)
    assert result.returncode != 0
    assert "zz-bad.yaml" in result.stderr and "invalid YAML" in result.stderr

    nokind = write_bundle(tmp_path / "nokind")
    (nokind / "extra.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nmetadata: {name: b}\n"
    )
    result = shoal.cli("apply", str(nokind), "--name", "web", check=False)
    assert result.returncode != 0
    assert "extra.yaml (document 2)" in result.stderr and "'apiVersion'" in result.stderr

    result = shoal.cli("apply", str(good), "--name", "web", "--target", "env foo (x)", check=False)
    assert result.returncode == 2
    assert "env foo (x)" in result.stderr

    assert shoal.bundles()["web"]["deployment_id"] == before


def test_unknown_and_expired_tokens_are_refused(shoal: Shoal) -> None:
    agent = shoal.start_agent("shop-x", "env=prod", "shoal_bogus")
    assert agent.wait(timeout=30) != 0
    assert "unknown registration token" in shoal.log("shop-x")

    expired = shoal.cli("token", "create", "--ttl", "1s").stdout.strip()
    time.sleep(1.5)
    agent = shoal.start_agent("shop-y", "env=prod", expired)
    assert agent.wait(timeout=30) != 0
    assert "expired" in shoal.log("shop-y")
    assert shoal.clusters() == {}


def test_garbage_on_a_status_subject_is_counted_and_dropped(shoal: Shoal) -> None:
    shoal.start_agent("shop-1", "env=prod", shoal.token())
    cluster = wait_for(lambda: shoal.clusters().get("shop-1"), what="registration")

    async def send_garbage() -> None:
        nc = await nats.connect(shoal.url)
        try:
            await nc.jetstream().publish(subjects.status(0, "nosuchcluster"), b"\x00\xffjunk")
            await nc.publish(subjects.heartbeat(0, cluster["id"]), b"{not msgpack")
        finally:
            await nc.close()

    asyncio.run(send_garbage())
    stats = wait_for(
        lambda: (
            (s := shoal.json("stats"))
            and s.get("status_dropped", 0) >= 1
            and s.get("heartbeat_dropped", 0) >= 1
            and s
        ),
        what="drops to be counted",
    )
    assert stats["status_dropped"] == 1
    assert set(shoal.clusters()) == {"shop-1"}
    assert "bus.message.dropped" in shoal.log("server")
    assert "nosuchcluster" in shoal.log("server")
