"""``shoal apply DIR`` and ``shoal target DIR``: a Fleet repository's directories as bundles.

Both read DIR the way Fleet scans a repository (:mod:`bundles.build`): each
directory with a ``fleet.yaml`` is a bundle, otherwise DIR's own manifests,
Helm chart or kustomization. ``apply`` renders every variant once before
anything is sent, so a broken chart, template or patch is refused here with
the file named and nothing changes; ``target`` prints what one cluster with
the given labels would get, as ``fleet test`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bundles.errors import BundleError
from protocol import admin, codec, ids
from protocol.errors import ProtocolError
from protocol.models import BundleTarget, DeploymentOptions
from protocol.selectors import parse_labels, parse_selector
from shoal_cli import output
from shoal_cli.client import AdminClient
from shoal_cli.errors import CliError, UsageError

APPLY_TIMEOUT = 180.0  # seconds for one bundle's upload and apply

if TYPE_CHECKING:
    from bundles.build import BuildResult, BuiltBundle
    from bundles.templating import ClusterContext

# The engines and chart fetching are imported by the commands that use them:
# `shoal agent` shares this entry point and keeps its memory for the agent.


def parse_targets(selectors: list[str]) -> tuple[BundleTarget, ...]:
    """``--target`` selectors as bundle targets; UsageError naming the one that is bad."""
    targets = []
    for index, text in enumerate(selectors):
        try:
            selector = parse_selector(text)
        except ProtocolError as exc:
            raise UsageError(f"--target {text!r}: {exc}") from exc
        targets.append(BundleTarget(name=f"target{index:03d}", cluster_selector=selector))
    return tuple(targets)


def _build(args: argparse.Namespace, *, validate: bool) -> BuildResult:
    from bundles.build import build_bundles  # noqa: PLC0415

    root = Path(args.dir)
    if not root.is_dir():
        raise CliError(
            f"{root}: no such directory" if not root.exists() else f"{root}: not a directory"
        )
    try:
        result = build_bundles(
            root,
            base_name=args.name or None,
            paths=[p for p in (args.paths or "").split(",") if p],
            targets=parse_targets(getattr(args, "target", None) or []),
            validate=validate,
        )
    except BundleError as exc:
        raise CliError(f"{root}: {exc}") from exc
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return result


def _with_flags(bundle: BuiltBundle, args: argparse.Namespace) -> BuiltBundle:
    """Options given on the command line win over fleet.yaml's."""
    changes: dict[str, Any] = {}
    if args.namespace:
        changes["default_namespace"] = args.namespace
    if args.force_namespace:
        changes["namespace"] = args.force_namespace
    if args.correct_drift:
        changes["correct_drift"] = True
    if args.keep_resources:
        changes["keep_resources"] = True
    if not changes:
        return bundle
    options = bundle.spec.options.model_copy(update=changes)
    spec = bundle.spec.model_copy(update={"options": options})
    return dataclasses.replace(bundle, spec=spec)


async def apply(args: argparse.Namespace) -> int:
    result = await asyncio.to_thread(_build, args, validate=True)
    bundles = [_with_flags(b, args) for b in result.bundles]
    replies: list[admin.BundleApplied] = []
    # The control plane renders every variant again before it accepts a bundle
    # (Helm, Kustomize): give it longer than a plain request.
    async with AdminClient(args.server, timeout=APPLY_TIMEOUT) as client:
        for bundle in bundles:
            blob = codec.encode_resources(bundle.resources)
            manifest = ids.manifest_id_of_blob(blob)
            try:
                await client.upload_blob(manifest, blob)
                replies.append(
                    await client.admin(
                        admin.BundleApply(spec=bundle.spec, manifest_id=manifest),
                        admin.BundleApplied,
                    )
                )
            except CliError as exc:
                # Everything was checked here first, so this is rare (a control plane of
                # another version, or the bus); say what did go through.
                done = ", ".join(r.name for r in replies) or "none"
                raise type(exc)(f"{exc} (bundles applied before this one: {done})") from exc
    if args.output == "json":
        rows = [r.model_dump(mode="json") for r in replies]
        output.emit(rows[0] if len(rows) == 1 else rows, "json")
        return 0
    for bundle, reply in zip(bundles, replies, strict=True):
        verb = "configured" if reply.changed else "unchanged"
        ids_text = ", ".join(reply.deployment_ids) or "(no cluster targeted yet)"
        where = "" if bundle.path in ("", ".") else f" ({bundle.path})"
        print(f"bundle/{reply.name}{where} {verb}: {ids_text}")
    return 0


async def target(args: argparse.Namespace) -> int:
    try:
        labels = parse_labels(args.labels or "")
    except ProtocolError as exc:
        raise UsageError(f"-l {args.labels!r}: {exc}") from exc
    from bundles.templating import ClusterContext  # noqa: PLC0415

    result = await asyncio.to_thread(_build, args, validate=False)
    cluster = ClusterContext(
        name=args.cluster_name, namespace=args.cluster_namespace, labels=labels
    )
    documents: list[dict[str, Any]] = []
    for bundle in result.bundles:
        options = bundle.spec.resolve(cluster_name=cluster.name, labels=labels, groups={})
        if options is None:
            print(f"# bundle {bundle.spec.name}: not deployed to this cluster", file=sys.stderr)
            continue
        documents.extend(await asyncio.to_thread(_render, bundle, options, cluster))
    if args.output == "json":
        output.emit(documents, "json")
    else:
        sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True))
    return 0


def _render(
    bundle: BuiltBundle, options: DeploymentOptions, cluster: ClusterContext
) -> list[dict[str, Any]]:
    from bundles.render import render_placed  # noqa: PLC0415

    try:
        objects = render_placed(bundle.resources, options, bundle=bundle.spec.name, cluster=cluster)
    except BundleError as exc:
        raise CliError(f"bundle {bundle.spec.name} ({bundle.path}): {exc}") from exc
    return list(objects)


def add_target_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "target",
        help="print the manifests a cluster with given labels would get (like fleet test)",
        description="Read DIR as `shoal apply` does (each fleet.yaml directory is a bundle), "
        "pick each bundle's target customization for a cluster with the labels given, and "
        "print the objects it would receive, rendered with Helm, Kustomize and overlays and "
        "with namespaces placed. Nothing is sent anywhere; remote charts are downloaded "
        "into the local chart cache.",
    )
    parser.add_argument("dir", metavar="DIR", help="directory to read (a Fleet repository)")
    parser.add_argument(
        "-l", "--labels", metavar="K=V,...", default="", help="the cluster's labels, e.g. env=prod"
    )
    parser.add_argument(
        "--cluster-name",
        default="local",
        help="the cluster's name, for clusterName targets and ${ .ClusterName } (default local)",
    )
    parser.add_argument(
        "--cluster-namespace",
        default="fleet-local",
        help="${ .ClusterNamespace } in templates (default fleet-local)",
    )
    parser.add_argument("--name", help="base name of the bundles (default: DIR's name)")
    parser.add_argument("--paths", metavar="P1,P2", help="only these paths under DIR")
    parser.add_argument(
        "-o", "--output", choices=["yaml", "json"], default="yaml", help="output format"
    )
    parser.set_defaults(func=target)
