"""``shoal agent``: run the edge agent of one cluster."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeagent.agent import Agent
from edgeagent.backend import ClusterBackend
from edgeagent.errors import AgentError
from edgeagent.settings import AgentSettings
from edgeagent.simulated import SimulatedCluster
from protocol.errors import ProtocolError
from protocol.models import validate_cluster_name
from protocol.selectors import parse_labels
from shoal_cli.errors import CliError, UsageError

if TYPE_CHECKING:
    from edgeagent.kube.backend import KubeBackend

BACKENDS = ("simulated", "kubernetes")


def add_parser(commands: Any, client: Callable[[argparse.ArgumentParser], None]) -> None:
    agent = commands.add_parser(
        "agent",
        help="run the agent of one cluster",
        description="Run the shoal agent for one cluster. On its first start it registers "
        "with --token and keeps its identity in --state-dir; later starts need no token. It "
        "reads its desired state from the bus, applies it through the backend, and reports "
        "status and heartbeats. While the bus is unreachable it keeps enforcing the last "
        "desired state it saved.",
    )
    agent.add_argument(
        "--token",
        default=os.environ.get("SHOAL_TOKEN", ""),
        help="registration token from `shoal token create` (env SHOAL_TOKEN); needed on the "
        "first start only",
    )
    agent.add_argument(
        "--name",
        default=os.environ.get("SHOAL_NAME"),
        help="cluster name, a DNS name unique in the fleet (env SHOAL_NAME)",
    )
    agent.add_argument(
        "--labels",
        default=os.environ.get("SHOAL_LABELS", ""),
        metavar="K=V,...",
        help="cluster labels that bundle targets select on (env SHOAL_LABELS)",
    )
    agent.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("SHOAL_BACKEND", "kubernetes"),
        help="where to apply: a real cluster (kubernetes) or an in-memory one (simulated); "
        "env SHOAL_BACKEND, default %(default)s",
    )
    agent.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("SHOAL_STATE_DIR", "/var/lib/shoal-agent")),
        help="where identity, the last desired state and resource blobs are kept "
        "(env SHOAL_STATE_DIR; default %(default)s)",
    )
    agent.add_argument(
        "--kubeconfig",
        type=Path,
        default=os.environ.get("KUBECONFIG"),
        help="kubeconfig for the kubernetes backend (env KUBECONFIG; default: the in-cluster "
        "service account)",
    )
    client(agent)
    agent.set_defaults(func=run)


async def _kube_backend(args: argparse.Namespace, settings: AgentSettings) -> KubeBackend:
    # Imported here: a simulated agent never pays for the Kubernetes client.
    from edgeagent.kube.backend import KubeBackend  # noqa: PLC0415

    kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
    if kubeconfig is not None and not kubeconfig.is_file():
        raise UsageError(f"--kubeconfig {kubeconfig}: no such file")
    return await KubeBackend.connect(kubeconfig, settings=settings)


async def run(args: argparse.Namespace) -> int:
    if not args.name:
        raise UsageError("--name is required (or set SHOAL_NAME)")
    try:
        validate_cluster_name(args.name)
        labels = parse_labels(args.labels)
    except ProtocolError as exc:
        raise UsageError(str(exc)) from exc
    settings = AgentSettings.from_env(os.environ)
    try:
        args.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CliError(f"cannot create --state-dir {args.state_dir}: {exc.strerror}") from exc
    try:
        async with contextlib.AsyncExitStack() as stack:
            kube: KubeBackend | None = None
            backend: ClusterBackend
            if args.backend == "kubernetes":
                kube = await stack.enter_async_context(await _kube_backend(args, settings))
                backend = kube
            else:
                backend = SimulatedCluster.from_settings(settings)
            agent = Agent.from_state_dir(
                args.state_dir,
                backend=backend,
                settings=settings,
                name=args.name,
                labels=labels,
                url=args.server,
                token=args.token or None,
            )
            if kube is not None:  # drift seen by a watch is observed at once
                kube.on_drift = agent.reconciler.poke
            async with agent:
                await agent.run_forever()
    except AgentError as exc:
        raise CliError(str(exc)) from exc
    return 0
