"""End to end: `shoal agent --backend kubernetes --kubeconfig PATH` on an emulated cluster.

Processes as a user runs them: `shoal server` (with its nats-server), the
emulated API server (acting as the Deployment controller too), and the agent,
which reaches the cluster only through the kubeconfig file. The test applies
a bundle with the CLI, waits for Ready in `shoal status`, edits and deletes
objects behind shoal's back through the API, and watches the agent report
Modified and, once the bundle sets correctDrift, put things back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import write_bundle
from tests.e2e.harness import Shoal, free_port, wait_for
from tests.integration.kube.conftest import write_kubeconfig

pytestmark = pytest.mark.kube


class Cluster:
    """The emulated API server in a process of its own, reached over HTTP."""

    def __init__(self, workdir: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.log = (workdir / "cluster.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.kube.emulator", port, "--rollout"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            cwd=Path(__file__).parents[3],
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().startswith(b"serving")
        self.kubeconfig = write_kubeconfig(workdir / "kubeconfig", self.url)

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                answer: dict[str, Any] = json.load(response)
                return answer
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.log.close()


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[tuple[Shoal, Cluster]]:
    shoal = Shoal(workdir=tmp_path)
    cluster = Cluster(tmp_path)
    try:
        shoal.start_server()
        yield shoal, cluster
    finally:
        shoal.stop_all()
        cluster.stop()


def state(shoal: Shoal, bundle: str) -> str | None:
    clusters = shoal.clusters()
    return clusters.get("edge-1", {}).get("bundles", {}).get(bundle)


def test_agent_applies_reports_ready_sees_drift_and_corrects_it(
    installation: tuple[Shoal, Cluster], tmp_path: Path
) -> None:
    shoal, cluster = installation
    shoal._spawn(
        "edge-1",
        [
            "agent",
            "--token", shoal.token(),
            "--name", "edge-1",
            "--labels", "env=prod",
            "--backend", "kubernetes",
            "--kubeconfig", str(cluster.kubeconfig),
            "--state-dir", str(tmp_path / "agent"),
        ],
        SHOAL_KUBE_DRIFT_DEBOUNCE="0.2",
        SHOAL_OBSERVE_INTERVAL="3600",  # Modified must come from the drift watch
    )  # fmt: skip
    bundle = write_bundle(tmp_path / "web", tag="1.27", replicas=2)
    shoal.cli("apply", str(bundle), "--name", "web", "--namespace", "shop")

    on_fail = lambda: shoal.log("edge-1")  # noqa: E731
    wait_for(lambda: state(shoal, "web") == "Ready", what="web Ready", on_fail=on_fail)
    deployment_path = "/apis/apps/v1/namespaces/shop/deployments/web"
    live = cluster.call("GET", deployment_path)
    assert live is not None and live["metadata"]["labels"]["shoal.dev/bundle"] == "web"
    assert shoal.bundles()["web"]["states"] == {"Ready": 1}

    # Someone scales the Deployment by hand: Modified, and left alone.
    cluster.call("PATCH", deployment_path + "?fieldManager=kubectl-edit", {"spec": {"replicas": 5}})
    wait_for(
        lambda: state(shoal, "web") == "Modified", timeout=20, what="Modified", on_fail=on_fail
    )
    assert cluster.call("GET", deployment_path)["spec"]["replicas"] == 5  # type: ignore[index]

    # With correctDrift the agent takes it back, and re-creates what is deleted.
    shoal.cli("apply", str(bundle), "--name", "web", "--namespace", "shop", "--correct-drift")
    wait_for(
        lambda: (cluster.call("GET", deployment_path) or {}).get("spec", {}).get("replicas") == 2,
        timeout=20,
        what="replicas corrected",
        on_fail=on_fail,
    )
    wait_for(lambda: state(shoal, "web") == "Ready", what="Ready again", on_fail=on_fail)
    cluster.call("DELETE", "/api/v1/namespaces/shop/configmaps/cfg")
    wait_for(
        lambda: cluster.call("GET", "/api/v1/namespaces/shop/configmaps/cfg") is not None,
        timeout=20,
        what="ConfigMap re-created",
        on_fail=on_fail,
    )
    wait_for(lambda: state(shoal, "web") == "Ready", what="Ready at the end", on_fail=on_fail)
