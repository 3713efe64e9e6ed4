"""Fixtures of the Kubernetes backend tests: an emulated API server and a backend on it.

The API server is :class:`tests.integration.kube.emulator.ApiServer` (kmock's
scaffold, extended with server-side apply, dry runs, field managers, label
selectors and resumable watches) on 127.0.0.1 and a free port. The backend
reaches it through a kubeconfig file, as ``shoal agent --kubeconfig`` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from edgeagent.backend import Deployment
from edgeagent.kube.backend import KubeBackend
from edgeagent.settings import AgentSettings
from protocol.models import DeploymentOptions
from tests.integration.kube.emulator import ApiServer


def write_kubeconfig(path: Path, url: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulated", "cluster": {"server": url}}],
        "users": [{"name": "shoal", "user": {"token": "test-token"}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "shoal"}}],
        "current-context": "emulated",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    async with ApiServer() as server, kmock.Server(server, host="127.0.0.1"):
        yield server


@pytest.fixture
def kubeconfig(api: ApiServer, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", str(api.url).rstrip("/"))


@pytest.fixture
def kube_settings() -> AgentSettings:
    return AgentSettings(
        kube_drift_debounce=0.05,
        kube_watch_retry_initial=0.05,
        kube_watch_retry_max=0.2,
        kube_crd_timeout=5.0,
        kube_request_timeout=5.0,
    )


@pytest.fixture
async def backend(kubeconfig: Path, kube_settings: AgentSettings) -> AsyncIterator[KubeBackend]:
    async with await KubeBackend.connect(kubeconfig, settings=kube_settings) as kube:
        yield kube


def deployment(
    bundle: str, *objects: dict[str, Any], deployment_id: str = "m1:o1", **options: Any
) -> Deployment:
    return Deployment(bundle, deployment_id, DeploymentOptions(**options), tuple(objects))


def configmap(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def deployment_obj(name: str, namespace: str = "default", *, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }


def rolled_out(replicas: int, generation: int = 1) -> dict[str, Any]:
    """The status a Deployment controller writes once every replica is updated and available."""
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {timeout} s")
