"""Client commands: token, apply, status, clusters, delete, group, stats."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from protocol import admin
from protocol.errors import ProtocolError
from protocol.gitrepos import COMMIT_LABEL, REPO_LABEL
from protocol.models import ClusterGroup
from protocol.selectors import parse_labels, parse_selector
from protocol.states import WORST_FIRST, State
from shoal_cli import output
from shoal_cli.client import AdminClient
from shoal_cli.durations import parse_duration
from shoal_cli.errors import UsageError


async def token_create(args: argparse.Namespace) -> int:
    ttl = parse_duration(args.ttl)
    if ttl <= 0:
        raise UsageError("--ttl must be positive")
    async with AdminClient(args.server) as client:
        reply = await client.admin(
            admin.TokenCreate(ttl_seconds=ttl, description=args.description or ""),
            admin.TokenCreated,
        )
    print(reply.token)
    return 0


def _warn_partial(missing_shards: int, what: str) -> None:
    if missing_shards:
        output.note(
            f"warning: {missing_shards} shard(s) of the fleet had no control-plane replica "
            f"answering in time; their clusters are not {what} below"
        )


def _state_text(states: dict[State, int]) -> str:
    order = [*WORST_FIRST, State.OFFLINE]
    parts = [f"{state.value}: {states[state]}" for state in order if states.get(state)]
    return ", ".join(parts) or "-"


async def status(args: argparse.Namespace) -> int:
    async with AdminClient(args.server) as client:
        reply = await client.admin(admin.BundleList(), admin.BundleListReply)
    _warn_partial(reply.missing_shards, "counted")
    if args.output != "table":
        rows: list[dict[str, Any]] = [
            {
                "name": b.name,
                "deployment_id": b.deployment_id,
                "deployment_ids": list(b.deployment_ids),
                "targeted": b.targeted,
                "ready": b.states.get(State.READY, 0),
                "states": {state.value: n for state, n in b.states.items()},
                "updated_at": output.iso(b.updated_at),
                "labels": b.labels,
                "gitrepo": b.labels.get(REPO_LABEL),
                "commit": b.labels.get(COMMIT_LABEL),
            }
            for b in reply.bundles
        ]
        output.emit(rows, args.output)
        return 0
    from_git = any(COMMIT_LABEL in b.labels for b in reply.bundles)
    output.table(
        "Bundles",
        ["NAME", "DEPLOYMENT", "READY", "STATES", *(["GITREPO", "COMMIT"] if from_git else [])],
        [
            [
                b.name,
                _short(b.deployment_id),
                f"{b.states.get(State.READY, 0)}/{b.targeted}",
                _state_text(b.states),
                *(
                    [b.labels.get(REPO_LABEL, "-"), b.labels.get(COMMIT_LABEL, "-")[:12]]
                    if from_git
                    else []
                ),
            ]
            for b in reply.bundles
        ],
    )
    return 0


def _short(deployment_id: str) -> str:
    manifest, _, options = deployment_id.partition(":")
    return f"{manifest[:14]}:{options[:6]}" if options else manifest[:14]


async def clusters(args: argparse.Namespace) -> int:
    try:
        selector = parse_selector(args.selector) if args.selector else None
    except ProtocolError as exc:
        raise UsageError(f"-l {args.selector!r}: {exc}") from exc
    async with AdminClient(args.server) as client:
        reply = await client.admin(admin.ClusterList(), admin.ClusterListReply)
    _warn_partial(reply.missing_shards, "listed")
    items = [c for c in reply.clusters if selector is None or selector.matches(c.labels)]
    if args.output != "table":
        rows = [
            {
                "name": c.name,
                "id": c.id,
                "labels": c.labels,
                "bundles": {bundle: state.value for bundle, state in c.bundles.items()},
                "offline": c.offline,
                "last_seen": output.iso(c.last_seen),
            }
            for c in items
        ]
        output.emit(rows, args.output)
        return 0
    now = time.time()
    output.table(
        "Clusters",
        ["NAME", "LABELS", "BUNDLES", "LAST SEEN"],
        [
            [
                c.name + (" (offline)" if c.offline else ""),
                ",".join(f"{k}={v}" for k, v in sorted(c.labels.items())),
                ", ".join(f"{b}: {s.value}" for b, s in sorted(c.bundles.items())) or "-",
                output.ago(c.last_seen, now),
            ]
            for c in items
        ],
    )
    return 0


async def delete_bundle(args: argparse.Namespace) -> int:
    async with AdminClient(args.server) as client:
        reply = await client.admin(admin.BundleDelete(name=args.name), admin.BundleDeleted)
    print(f"bundle/{reply.name} deleted")
    return 0


async def group_set(args: argparse.Namespace) -> int:
    try:
        group = ClusterGroup(
            name=args.name,
            selector=parse_selector(args.selector),
            labels=parse_labels(args.labels or ""),
        )
    except ProtocolError as exc:
        raise UsageError(str(exc)) from exc
    async with AdminClient(args.server) as client:
        await client.admin(admin.GroupSet(group=group), admin.Ok)
    print(f"clustergroup/{group.name} configured")
    return 0


async def group_delete(args: argparse.Namespace) -> int:
    async with AdminClient(args.server) as client:
        await client.admin(admin.GroupDelete(name=args.name), admin.Ok)
    print(f"clustergroup/{args.name} deleted")
    return 0


async def group_list(args: argparse.Namespace) -> int:
    async with AdminClient(args.server) as client:
        reply = await client.admin(admin.GroupList(), admin.GroupListReply)
    if args.output != "table":
        output.emit([g.model_dump(mode="json", by_alias=True) for g in reply.groups], args.output)
        return 0
    output.table(
        "Cluster groups",
        ["NAME", "SELECTOR", "LABELS"],
        [
            [g.name, str(g.selector) or "(all)", ",".join(f"{k}={v}" for k, v in g.labels.items())]
            for g in reply.groups
        ],
    )
    return 0


async def stats(args: argparse.Namespace) -> int:
    async with AdminClient(args.server) as client:
        reply = await client.admin(admin.Stats(), admin.StatsReply)
    if args.output != "table":
        output.emit(dict(sorted(reply.counters.items())), args.output)
    else:
        output.table(
            "Control plane",
            ["COUNTER", "VALUE"],
            [[k, str(v)] for k, v in sorted(reply.counters.items())],
        )
    sys.stdout.flush()
    return 0
