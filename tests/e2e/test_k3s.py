"""Opt-in end to end on a real K3s: the Kubernetes backend against a real API server.

The emulated API server of ``tests/integration/kube`` cannot prove that the
real one agrees, so this runs the same story against K3s: apply (dry run
first), readiness from real controllers, a refused object, drift from an
edit by another field manager, correction, prune and removal.

Where the cluster comes from, in order:

* ``SHOAL_E2E_KUBECONFIG=/path/to/kubeconfig``: any cluster you point it at
  (everything goes into a namespace ``shoal-e2e-<random>``, deleted after);
* a Docker engine that answers: a ``rancher/k3s`` container started with
  testcontainers' K3s module (``SHOAL_E2E_K3S_IMAGE`` picks the image);
* neither: the test skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeagent.backend import Deployment
from edgeagent.kube.backend import KubeBackend
from edgeagent.kube.client import MERGE_PATCH, KubeClient
from edgeagent.kube.errors import ApplyRefused
from edgeagent.settings import AgentSettings
from protocol.models import DeploymentOptions
from protocol.states import State

pytestmark = [pytest.mark.e2e, pytest.mark.kube]

READY_TIMEOUT = 180.0


def _docker_answers() -> bool:
    """Whether a Docker engine answers ``GET /_ping`` on its socket (or at DOCKER_HOST)."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker  # noqa: PLC0415 (only when no kubeconfig is given)

        client = docker.from_env(timeout=3)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    given = os.environ.get("SHOAL_E2E_KUBECONFIG")
    if given:
        yield Path(given)
        return
    if not _docker_answers():
        pytest.skip("no SHOAL_E2E_KUBECONFIG and no Docker engine answers: no cluster to test on")
    from testcontainers.community.k3s import K3SContainer  # noqa: PLC0415

    image = os.environ.get("SHOAL_E2E_K3S_IMAGE", "rancher/k3s:v1.30.4-k3s1")
    with K3SContainer(image) as k3s:
        path = tmp_path_factory.mktemp("k3s") / "kubeconfig"
        path.write_text(k3s.config_yaml())
        yield path


@pytest.fixture
async def backend(kubeconfig: Path) -> AsyncIterator[KubeBackend]:
    settings = AgentSettings(kube_drift_debounce=0.2, kube_crd_timeout=60.0)
    async with await KubeBackend.connect(kubeconfig, settings=settings) as kube:
        yield kube


@pytest.fixture
async def namespace(kubeconfig: Path) -> AsyncIterator[str]:
    name = f"shoal-e2e-{secrets.token_hex(3)}"
    yield name
    async with await KubeClient.connect(kubeconfig, settings=AgentSettings()) as client:
        with contextlib.suppress(Exception):
            await client.request("DELETE", f"/api/v1/namespaces/{name}")


def _objects(
    namespace: str, *, replicas: int = 1, extra: bool = True
) -> tuple[dict[str, Any], ...]:
    labels = {"app": "web"}
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9"}]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": namespace},
            "data": {"a": "1"},
        },
    ]
    if extra:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "extra", "namespace": namespace},
                "data": {"b": "1"},
            }
        )
    return tuple(objects)


async def _until(backend: KubeBackend, deployment: Deployment, state: State) -> None:
    for _ in range(int(READY_TIMEOUT)):
        if (await backend.observe(deployment)).state == state:
            return
        await asyncio.sleep(1.0)
    raise AssertionError(f"{deployment.bundle} not {state} within {READY_TIMEOUT:.0f} s")


async def test_bundle_lifecycle_on_k3s(
    backend: KubeBackend, kubeconfig: Path, namespace: str
) -> None:
    web = Deployment("web", "m:1", DeploymentOptions(), _objects(namespace))
    await backend.apply(web)
    await _until(backend, web, State.READY)

    # A refused object: nothing of the new deployment is applied.
    bad = Deployment("web", "m:2", DeploymentOptions(), _objects(namespace, replicas=-1))
    with pytest.raises(ApplyRefused) as caught:
        await backend.apply(bad)
    assert "replicas" in caught.value.conditions[0].reason

    # Someone edits the ConfigMap: Modified naming the field.
    async with await KubeClient.connect(kubeconfig, settings=AgentSettings()) as client:
        await client.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/configmaps/cfg",
            query=[("fieldManager", "kubectl-edit")],
            body={"data": {"a": "edited"}},
            content_type=MERGE_PATCH,
        )
        seen = await backend.observe(web)
        assert seen.state == State.MODIFIED
        assert seen.modified[0].reason == "modified: data.a"

        # correctDrift takes it back; the dropped ConfigMap is pruned.
        fixed = Deployment(
            "web", "m:3", DeploymentOptions(correctDrift=True), _objects(namespace, extra=False)
        )
        await backend.apply(fixed)
        await _until(backend, fixed, State.READY)
        cfg = await client.get(f"/api/v1/namespaces/{namespace}/configmaps/cfg")
        assert cfg is not None and cfg["data"]["a"] == "1"
        assert await client.get(f"/api/v1/namespaces/{namespace}/configmaps/extra") is None

        await backend.remove("web", keep_resources=False)
        assert await client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web") is None
        assert "web" not in await backend.deployed_bundles()
