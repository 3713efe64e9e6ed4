"""``shoal gitrepo``: git repositories whose commits the control plane deploys as bundles.

``add`` creates or updates a gitrepo and, by default, waits for its first
poll so that a wrong URL, branch or manifest shows at once; ``list`` and
``show`` print what was seen and deployed; ``delete`` removes the gitrepo and
its bundles (as Fleet does). ``secret`` manages the credentials gitrepos
fetch with; they are sent to the control plane once and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from protocol import admin
from protocol.gitrepos import DEFAULT_INTERVAL, GitRepoSpec
from protocol.models import BundleTarget
from protocol.selectors import LabelSelector
from shoal_cli import gitsecret_cmds, output
from shoal_cli.bundle_cmds import parse_targets
from shoal_cli.client import AdminClient
from shoal_cli.durations import parse_duration
from shoal_cli.errors import CliError, UsageError

AddArgs = Callable[[argparse.ArgumentParser], None]

WAIT_POLL = 0.25

ADD_HELP = """\
Create or update the gitrepo NAME: the control plane polls URL every --interval
(`git ls-remote`), and turns each new commit into bundles, deployed to the clusters
--target selects. Each path (default: the repository root) is a bundle, and so is
every directory holding a fleet.yaml. Bundles are named after NAME and the path, and
labelled
shoal.dev/repo-name and shoal.dev/commit. A commit with any invalid bundle is not
deployed at all: the previous commit stays, and `shoal gitrepo show NAME` names the
file and the error. Private repositories: store credentials with `shoal gitrepo
secret set` and pass --auth-secret. A webhook (`shoal server --webhook-listen`)
polls at once on a push.
"""


def add_parser(commands: Any, client: AddArgs, output_format: AddArgs) -> None:
    gitrepo = commands.add_parser(
        "gitrepo",
        help="deploy bundles from git repositories (Fleet's GitRepo)",
        description="Git repositories whose commits the control plane deploys as bundles, "
        "as Fleet's GitRepo: `add` one, `list` or `show` what was seen and deployed, `delete` "
        "it with its bundles; `secret` manages credentials for private repositories.",
    )
    sub = gitrepo.add_subparsers(dest="gitrepo_command", metavar="ACTION", required=True)

    add = sub.add_parser(
        "add",
        help="create or update a gitrepo",
        description=ADD_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add.add_argument("name", metavar="NAME", help="gitrepo name (a DNS label)")
    add.add_argument(
        "--repo",
        required=True,
        metavar="URL",
        help="https://, http://, ssh://, git:// or user@host:path (no credentials in it)",
    )
    ref = add.add_mutually_exclusive_group()
    ref.add_argument("--branch", metavar="B", help="branch to follow (default: the remote's HEAD)")
    ref.add_argument("--revision", metavar="REV", help="pin to a tag or full commit ID instead")
    add.add_argument(
        "--paths",
        metavar="P1,P2",
        help="comma-separated directories to read bundles from (default: the whole repository)",
    )
    add.add_argument(
        "--interval",
        default=f"{DEFAULT_INTERVAL:g}s",
        metavar="DURATION",
        help="polling interval, e.g. 15s, 5m (default %(default)s; at least 1s)",
    )
    add.add_argument(
        "--target",
        action="append",
        metavar="SELECTOR",
        help="label selector in kubectl -l syntax; repeat for several (first match wins); "
        "none means every cluster",
    )
    add.add_argument("--auth-secret", metavar="NAME", help="git secret to fetch with")
    add.add_argument(
        "--wait",
        default="30s",
        metavar="DURATION",
        help="wait this long for the first poll and print its result (default %(default)s; "
        "0 returns at once)",
    )
    output_format(add)
    client(add)
    add.set_defaults(func=gitrepo_add)

    listing = sub.add_parser("list", help="gitrepos, their commits and bundles")
    output_format(listing)
    client(listing)
    listing.set_defaults(func=gitrepo_list)

    show = sub.add_parser(
        "show",
        help="one gitrepo in detail",
        description="What the gitrepo follows, the last commit seen and the one deployed, "
        "when it was last polled, the error of the last failed commit (file and cause), and "
        "its bundles with how many targeted clusters are Ready.",
    )
    show.add_argument("name", metavar="NAME")
    output_format(show)
    client(show)
    show.set_defaults(func=gitrepo_show)

    delete = sub.add_parser(
        "delete",
        help="delete a gitrepo and the bundles it created",
        description="Delete the gitrepo NAME and, as Fleet does, every bundle it created; "
        "clusters remove their resources unless a bundle keeps them.",
    )
    delete.add_argument("name", metavar="NAME")
    client(delete)
    delete.set_defaults(func=gitrepo_delete)

    gitsecret_cmds.add_parser(sub, client, output_format)


# -- gitrepos ----------------------------------------------------------------


def _targets(selectors: list[str]) -> tuple[BundleTarget, ...]:
    if not selectors:
        return (BundleTarget(name="all", cluster_selector=LabelSelector()),)
    return parse_targets(selectors)


FLAGS = {
    "name": "NAME",
    "repo": "--repo",
    "branch": "--branch",
    "revision": "--revision",
    "paths": "--paths",
    "polling_interval": "--interval",
    "auth_secret": "--auth-secret",
}


def _validation_message(exc: ValueError) -> str:
    """pydantic's first error, naming the flag rather than the field."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    first = errors()[0]
    loc = [str(part) for part in first.get("loc", ())]
    message = str(first.get("msg", exc)).removeprefix("Value error, ")
    if not loc:
        return message
    return f"{FLAGS.get(loc[0], '.'.join(loc))}: {message}"


def build_spec(args: argparse.Namespace) -> GitRepoSpec:
    paths = tuple(p.strip() for p in (args.paths or "").split(",") if p.strip())
    try:
        return GitRepoSpec(
            name=args.name,
            repo=args.repo,
            branch=args.branch or "",
            revision=args.revision or "",
            paths=paths,
            polling_interval=parse_duration(args.interval),
            targets=_targets(args.target or []),
            auth_secret=args.auth_secret or "",
        )
    except ValueError as exc:  # pydantic names the field
        raise UsageError(f"gitrepo {args.name!r}: {_validation_message(exc)}") from exc


async def _info(client: AdminClient, name: str) -> admin.GitRepoInfo:
    reply = await client.admin(admin.GitRepoList(name=name), admin.GitRepoListReply)
    if not reply.repos:
        raise CliError(f"no gitrepo named {name!r}")
    return reply.repos[0]


async def _previous_poll(client: AdminClient, name: str) -> float | None:
    """When the gitrepo was last polled, if it exists (listing all: no refusal logged)."""
    reply = await client.admin(admin.GitRepoList(), admin.GitRepoListReply)
    return next((i.status.last_poll_at for i in reply.repos if i.spec.name == name), None)


async def gitrepo_add(args: argparse.Namespace) -> int:
    spec = build_spec(args)
    wait = parse_duration(args.wait)
    async with AdminClient(args.server) as client:
        before = await _previous_poll(client, spec.name)
        reply = await client.admin(admin.GitRepoSet(spec=spec), admin.GitRepoSetReply)
        verb = "created" if reply.created else "configured" if reply.changed else "unchanged"
        if args.output == "table":
            print(f"gitrepo/{reply.name} {verb}")
        info = await _wait_first_poll(client, spec.name, reply.generation, before, wait)
    if info is None:
        if args.output != "table":
            output.emit({"name": reply.name, "generation": reply.generation}, args.output)
        else:
            print(f"first poll pending; see `shoal gitrepo show {spec.name}`")
        return 0
    if args.output != "table":
        output.emit(_info_dict(info), args.output)
    status = info.status
    if status.error:
        raise CliError(f"gitrepo/{spec.name}: {_error_text(info)} (it is saved and polled again)")
    if args.output == "table":
        names = ", ".join(status.bundles) or "(none)"
        print(f"commit {status.deployed_commit[:12]} deployed: {names}")
    return 0


async def _wait_first_poll(
    client: AdminClient, name: str, generation: int, before: float | None, wait: float
) -> admin.GitRepoInfo | None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        info = await _info(client, name)
        status = info.status
        if (
            status.last_poll_at is not None
            and status.last_poll_at != before
            and status.observed_generation >= generation
            and not status.applying
        ):
            return info
        await asyncio.sleep(WAIT_POLL)
    return None


async def gitrepo_list(args: argparse.Namespace) -> int:
    async with AdminClient(args.server) as client:
        reply = await client.admin(admin.GitRepoList(), admin.GitRepoListReply)
    if args.output != "table":
        output.emit([_info_dict(info) for info in reply.repos], args.output)
        return 0
    now = time.time()
    output.table(
        "Git repositories",
        ["NAME", "REPO", "DEPLOYED", "BUNDLES", "READY", "POLLED", "ERROR"],
        [
            [
                info.spec.name,
                info.spec.repo,
                _deployed_text(info),
                str(len(info.bundles)),
                _ready_text(info),
                output.ago(info.status.last_poll_at, now),
                _shorten(_error_text(info), 60) or "-",
            ]
            for info in reply.repos
        ],
    )
    return 0


async def gitrepo_show(args: argparse.Namespace) -> int:
    async with AdminClient(args.server) as client:
        info = await _info(client, args.name)
    if args.output != "table":
        output.emit(_info_dict(info), args.output)
        return 0
    spec, status, now = info.spec, info.status, time.time()
    rows = [
        ("Name", spec.name),
        ("Repo", spec.repo),
        ("Follows", spec.ref_text),
        ("Paths", ", ".join(spec.paths) or "(repository root)"),
        ("Interval", f"{spec.polling_interval:g}s"),
        ("Targets", _targets_text(spec.targets)),
        ("Auth secret", spec.auth_secret or "-"),
        ("Last commit seen", status.commit or "-"),
        ("Deployed commit", status.deployed_commit or "-"),
        ("Deployed", output.ago(status.deployed_at, now) if status.deployed_at else "never"),
        ("Last poll", output.ago(status.last_poll_at, now)),
        ("Error", _error_text(info) or "-"),
    ]
    rows += [("Warning", warning) for warning in status.warnings]
    width = max(len(key) for key, _ in rows) + 2
    for key, value in rows:
        print(f"{key + ':':<{width}}{value}")
    output.table(
        "Bundles",
        ["NAME", "DEPLOYMENT", "READY", "STATES"],
        [
            [
                b.name,
                b.deployment_id[:21] or "-",
                f"{b.ready}/{b.targeted}",
                ", ".join(f"{s.value}: {n}" for s, n in b.states.items()) or "-",
            ]
            for b in info.bundles
        ],
    )
    return 0


async def gitrepo_delete(args: argparse.Namespace) -> int:
    async with AdminClient(args.server) as client:
        reply = await client.admin(admin.GitRepoDelete(name=args.name), admin.GitRepoDeleted)
    print(f"gitrepo/{reply.name} deleted")
    for bundle in reply.bundles:
        print(f"bundle/{bundle} deleted")
    return 0


def _follows(spec: GitRepoSpec) -> str:
    if spec.revision:
        return spec.revision[:12] if len(spec.revision) >= 40 else f"tag {spec.revision}"
    return spec.branch or "HEAD"


def _targets_text(targets: tuple[BundleTarget, ...]) -> str:
    texts = [str(t.cluster_selector) or "(all)" for t in targets if t.cluster_selector is not None]
    return "; ".join(texts) or "(all)"


def _error_text(info: admin.GitRepoInfo) -> str:
    status = info.status
    if not status.error:
        return ""
    if status.error_commit:
        return f"commit {status.error_commit[:12]}: {status.error}"
    return status.error


def _deployed_text(info: admin.GitRepoInfo) -> str:
    """``main@1a2b3c4``: what is followed, and the commit deployed from it."""
    commit = info.status.deployed_commit[:7] or "-"
    return f"{_follows(info.spec)}@{commit}"


def _ready_text(info: admin.GitRepoInfo) -> str:
    """Ready clusters over targeted ones, summed over the gitrepo's bundles."""
    ready = sum(b.ready for b in info.bundles)
    targeted = sum(b.targeted for b in info.bundles)
    return f"{ready}/{targeted}" if info.bundles else "-"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _info_dict(info: admin.GitRepoInfo) -> dict[str, Any]:
    status = info.status
    return {
        "name": info.spec.name,
        "repo": info.spec.repo,
        "branch": info.spec.branch,
        "revision": info.spec.revision,
        "paths": list(info.spec.paths),
        "polling_interval": info.spec.polling_interval,
        "targets": [
            t.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            for t in info.spec.targets
        ],
        "auth_secret": info.spec.auth_secret,
        "generation": info.generation,
        "commit": status.commit,
        "deployed_commit": status.deployed_commit,
        "deployed_at": output.iso(status.deployed_at),
        "last_poll_at": output.iso(status.last_poll_at),
        "error": status.error,
        "error_commit": status.error_commit,
        "warnings": list(status.warnings),
        "bundles": [
            {
                "name": b.name,
                "deployment_id": b.deployment_id,
                "targeted": b.targeted,
                "ready": b.ready,
                "states": {s.value: n for s, n in b.states.items()},
            }
            for b in info.bundles
        ],
    }
