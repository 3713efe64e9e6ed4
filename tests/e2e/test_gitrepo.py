"""End to end: a git repository deployed by `shoal gitrepo add` to a real `shoal agent`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import write_bundle
from tests.e2e.harness import Shoal, wait_for
from tests.integration.gitserver import GitDaemon

pytestmark = pytest.mark.e2e


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    server = GitDaemon(tmp_path / "served")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_an_agent_converges_on_each_commit_of_a_gitrepo(
    shoal: Shoal, daemon: GitDaemon, tmp_path: Path
) -> None:
    work = daemon.create("shop", tmp_path / "work")
    write_bundle(work.path / "web", tag="1.27")
    work.write("docs/README.yaml", "not: [a manifest\n")  # outside --paths: never read
    first = work.push("web 1.27")
    token = shoal.token()
    shoal.start_agent("shop-1", "env=prod", token)
    shoal.start_agent("lab-1", "env=dev", token)
    wait_for(lambda: len(shoal.clusters()) == 2, what="agents to register")

    added = shoal.cli(
        "gitrepo", "add", "shop", "--repo", work.url, "--branch", "main", "--paths", "web",
        "--interval", "1s", "--target", "env=prod",
    )  # fmt: skip
    assert "gitrepo/shop created" in added.stdout
    assert f"commit {first[:12]} deployed" in added.stdout

    def ready_on(commit: str) -> dict[str, Any] | None:
        repo = shoal.json("gitrepo", "show", "shop")
        if repo["deployed_commit"] != commit or len(repo["bundles"]) != 1:
            return None
        bundle = repo["bundles"][0]
        return repo if (bundle["ready"], bundle["targeted"]) == (1, 1) else None

    repo = wait_for(lambda: ready_on(first), timeout=30, what="shop-1 Ready on the first commit")
    bundle = repo["bundles"][0]["name"]
    v1 = repo["bundles"][0]["deployment_id"]
    assert shoal.clusters()["shop-1"]["bundles"] == {bundle: "Ready"}
    assert shoal.clusters()["lab-1"]["bundles"] == {}

    write_bundle(work.path / "web", tag="1.28")
    second = work.push("web 1.28")
    repo = wait_for(lambda: ready_on(second), timeout=30, what="shop-1 Ready on the second commit")
    assert repo["bundles"][0]["deployment_id"] != v1

    listed = shoal.cli("gitrepo", "list").stdout
    assert "shop" in listed
    assert f"main@{second[:7]}" in listed

    deleted = shoal.cli("gitrepo", "delete", "shop").stdout
    assert f"bundle/{bundle} deleted" in deleted
    wait_for(
        lambda: shoal.clusters()["shop-1"]["bundles"] == {},
        timeout=30,
        what="the bundle to leave shop-1",
    )
