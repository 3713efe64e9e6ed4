"""``shoal``: argument parsing and dispatch.

Every command has ``--help``; errors print one line to stderr and exit
non-zero (1 for a refused or failed request, 2 for a wrong command line).
Client commands find the server through ``--server`` or ``SHOAL_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from controlplane.errors import ControlPlaneError
from protocol.errors import ProtocolError
from shoal_cli import (
    admin_cmds,
    agent_cmd,
    bundle_cmds,
    demo_cmd,
    gcpolicy,
    gitrepo_cmds,
    logs,
    output,
    server_cmd,
)
from shoal_cli.errors import CliError

DEFAULT_URL = "nats://127.0.0.1:4222"

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

DESCRIPTION = """\
shoal delivers Kubernetes bundles to very large fleets of small clusters over NATS.

Start a control plane with `shoal server`, create a registration token with
`shoal token create`, start `shoal agent` on each cluster, then `shoal apply` a
directory (manifests, or a Fleet repository with fleet.yaml, Helm charts and
Kustomize) or follow a git repository with `shoal gitrepo add`, and watch
`shoal status` and `shoal clusters`. `shoal target` previews what a cluster
with given labels would get.
`shoal demo` does all of it on this machine with simulated clusters.
"""


def _client(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("SHOAL_URL", DEFAULT_URL),
        metavar="URL",
        help="NATS URL of the shoal control plane (env SHOAL_URL; default %(default)s)",
    )


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=output.FORMATS,
        default="table",
        help="output format (default: a table)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SHOAL_LOG_LEVEL"),
        choices=["debug", "info", "warning", "error"],
        help="log verbosity on stderr (env SHOAL_LOG_LEVEL; default: info for server and "
        "agent, warning otherwise)",
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("SHOAL_LOG_FORMAT", "console"),
        choices=["console", "json"],
        help="log line format (env SHOAL_LOG_FORMAT; default %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    server_cmd.add_parser(commands)
    agent_cmd.add_parser(commands, _client)

    token = commands.add_parser("token", help="manage registration tokens")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_sub.add_parser(
        "create",
        help="create a registration token; prints only the token",
        description="Create a registration token for `shoal agent --token`. Only the token "
        "is printed on stdout, so `TOKEN=$(shoal token create)` works.",
    )
    create.add_argument("--ttl", default="24h", help="lifetime, e.g. 15m, 24h, 7d (default 24h)")
    create.add_argument("--description", help="a note kept with the token")
    _client(create)
    create.set_defaults(func=admin_cmds.token_create)

    apply = commands.add_parser(
        "apply",
        help="create or update bundles from a directory (manifests, fleet.yaml, Helm, Kustomize)",
        description="Read DIR as Fleet reads a repository: each directory holding a fleet.yaml "
        "is a bundle (its Helm chart, kustomization or manifests, overlays and target "
        "customizations); without any fleet.yaml, DIR's own manifests, Chart.yaml or "
        "kustomization.yaml are one bundle. Charts from URLs, Helm repositories or OCI are "
        "downloaded into the bundle. Every variant is rendered before anything is sent: a bad "
        "file, chart, template or patch rejects the whole directory, naming the file, and "
        "nothing changes. Re-applying unchanged content does nothing; changed content rolls "
        "out a new deployment ID.",
    )
    apply.add_argument("dir", metavar="DIR", help="directory to read")
    apply.add_argument(
        "--name",
        help="bundle name when DIR is one bundle; with several, the prefix of their names "
        "(default: DIR's name)",
    )
    apply.add_argument("--paths", metavar="P1,P2", help="only these paths under DIR")
    apply.add_argument(
        "--namespace",
        metavar="NS",
        help="namespace for objects that do not name one (Fleet's defaultNamespace)",
    )
    apply.add_argument(
        "--force-namespace",
        metavar="NS",
        help="put every namespaced object in NS (Fleet's namespace)",
    )
    apply.add_argument(
        "--target",
        action="append",
        metavar="SELECTOR",
        help="label selector in kubectl -l syntax, e.g. 'env=prod,region notin (us)'; "
        "repeat for several targets; only clusters some target selects get the bundles "
        "(fleet.yaml's targetCustomizations then customize them); none means every cluster",
    )
    apply.add_argument(
        "--correct-drift", action="store_true", help="re-apply resources modified on a cluster"
    )
    apply.add_argument(
        "--keep-resources",
        action="store_true",
        help="leave the resources on clusters when the bundle is deleted or untargeted",
    )
    apply.add_argument(
        "-o", "--output", choices=["text", "json"], default="text", help="output format"
    )
    _client(apply)
    apply.set_defaults(func=bundle_cmds.apply)
    bundle_cmds.add_target_parser(commands)

    status = commands.add_parser(
        "status",
        help="bundles and how many clusters are in each state",
        description="One line per bundle: its deployment ID and the count of targeted "
        "clusters per state (Ready, NotReady, WaitApplied, ErrApplied, OutOfSync, Modified, "
        "Pending, Offline).",
    )
    _output(status)
    _client(status)
    status.set_defaults(func=admin_cmds.status)

    clusters = commands.add_parser(
        "clusters",
        help="registered clusters, their labels and bundle states",
        description="One line per cluster with its labels, the state of every bundle that "
        "targets it, whether it is offline (heartbeat overdue) and when it was last seen.",
    )
    clusters.add_argument(
        "-l", "--selector", metavar="SELECTOR", help="only clusters matching this selector"
    )
    _output(clusters)
    _client(clusters)
    clusters.set_defaults(func=admin_cmds.clusters)

    delete = commands.add_parser("delete", help="delete a bundle or a cluster group")
    delete_sub = delete.add_subparsers(dest="delete_kind", metavar="KIND", required=True)
    delete_bundle = delete_sub.add_parser(
        "bundle",
        help="delete a bundle; agents remove its resources",
        description="Delete the bundle NAME. Every cluster removes its resources, unless the "
        "bundle was applied with --keep-resources.",
    )
    delete_bundle.add_argument("name", metavar="NAME")
    _client(delete_bundle)
    delete_bundle.set_defaults(func=admin_cmds.delete_bundle)
    delete_group = delete_sub.add_parser("group", help="delete a cluster group")
    delete_group.add_argument("name", metavar="NAME")
    _client(delete_group)
    delete_group.set_defaults(func=admin_cmds.group_delete)

    group = commands.add_parser("group", help="manage cluster groups (named selectors)")
    group_sub = group.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    group_set = group_sub.add_parser(
        "set",
        help="create or update a cluster group",
        description="A cluster group is a named selector over cluster labels, with labels of "
        "its own; bundle targets can pick groups by name or by the group's labels.",
    )
    group_set.add_argument("name", metavar="NAME")
    group_set.add_argument(
        "--selector", required=True, metavar="SELECTOR", help="clusters in the group"
    )
    group_set.add_argument("--labels", metavar="K=V,...", help="the group's own labels")
    _client(group_set)
    group_set.set_defaults(func=admin_cmds.group_set)
    group_list = group_sub.add_parser("list", help="list cluster groups")
    _output(group_list)
    _client(group_list)
    group_list.set_defaults(func=admin_cmds.group_list)

    stats = commands.add_parser(
        "stats", help="control-plane counters (publishes, ingested and dropped messages)"
    )
    _output(stats)
    _client(stats)
    stats.set_defaults(func=admin_cmds.stats)

    gitrepo_cmds.add_parser(commands, _client, _output)
    demo_cmd.add_parser(commands)
    return parser


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run a command; SIGINT and SIGTERM cancel it cleanly."""

    async def main() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await coro
        except asyncio.CancelledError:
            return 130

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    long_running = args.command in ("server", "agent")
    if long_running or args.command == "demo":
        gcpolicy.tune(fleet=args.command == "demo")
    logs.configure(args.log_level or ("info" if long_running else "warning"), args.log_format)
    func: Command = args.func
    try:
        return _run(func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ControlPlaneError, ProtocolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
