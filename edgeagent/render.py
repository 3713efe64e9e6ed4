"""Rendering at the edge: a bundle's files -> the objects this cluster should hold.

The work is :mod:`bundles.render` (Helm, Kustomize, overlays, per-cluster
templating, Fleet's namespace rules), the same code the control plane
validates bundles with, so both sides agree on what is valid. This module
adds what the agent needs around it: errors in the agent's own tree
(:class:`RenderError`, which becomes ErrApplied with the file and cause), and
:class:`ParseCache`, which keeps a bundle's decoded files and, for plain
manifests, its parsed objects, once per process. Engines (Helm, Kustomize)
run in a worker thread so the event loop keeps serving the bus meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bundles import render as bundle_render
from bundles.errors import BundleError
from bundles.overlays import raw_manifests
from bundles.templating import ClusterContext
from edgeagent.backend import Capabilities
from edgeagent.errors import RenderError
from protocol.manifests import ManifestError, ParsedObject, parse_resources
from protocol.models import BundleResource, DeploymentOptions

DEFAULT_NAMESPACE = bundle_render.DEFAULT_NAMESPACE
CLUSTER_SCOPED_KINDS = bundle_render.CLUSTER_SCOPED_KINDS


def parse(resources: Iterable[BundleResource]) -> tuple[ParsedObject, ...]:
    """The raw manifests' objects as parsed, before placement; RenderError names the file."""
    try:
        return tuple(parse_resources(raw_manifests(resources)))
    except ManifestError as exc:
        raise RenderError(str(exc), file=exc.file, document=exc.document) from exc


def place(parsed: Iterable[ParsedObject], options: DeploymentOptions) -> tuple[dict[str, Any], ...]:
    """Copies of parsed objects with their namespaces placed for these options."""
    try:
        return bundle_render.place(parsed, options)
    except BundleError as exc:
        raise RenderError(str(exc), file=exc.file) from exc


def render(
    resources: Iterable[BundleResource], options: DeploymentOptions
) -> tuple[dict[str, Any], ...]:
    """Every object of a bundle of plain manifests, in file-name order, namespaces placed."""
    return place(parse(resources), options)


PLACED_PER_BUNDLE = 8  # option sets whose placed objects a Loaded keeps


@dataclass(frozen=True)
class Loaded:
    """A bundle's files as decoded once, and its objects when no engine is needed.

    Plain manifests are also kept as placed for the last few option sets
    (by identity: the agents of a process share one decoded message, hence one
    options object), so a fleet of agents given the same deployment shares one
    tuple of objects. Backends treat a deployment's objects as read-only.
    """

    resources: tuple[BundleResource, ...]
    plain: tuple[ParsedObject, ...] | None  # None: a Helm or Kustomize bundle
    placed: dict[int, tuple[DeploymentOptions, tuple[dict[str, Any], ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def placed_for(self, options: DeploymentOptions) -> tuple[dict[str, Any], ...] | None:
        """The objects placed for ``options`` earlier, if still kept."""
        hit = self.placed.get(id(options))
        return hit[1] if hit is not None and hit[0] is options else None

    def place(self, options: DeploymentOptions) -> tuple[dict[str, Any], ...]:
        """The plain objects placed for ``options``, kept; RenderError names the file."""
        assert self.plain is not None
        objects = place(self.plain, options)
        if len(self.placed) >= PLACED_PER_BUNDLE:
            del self.placed[next(iter(self.placed))]
        self.placed[id(options)] = (options, objects)  # holding options keeps its id unique
        return objects


class ParseCache:
    """Decoded (and, for plain manifests, parsed) bundles by manifest ID, per process.

    One agent reads each deployment once anyway; a simulated fleet shares one
    cache among its agents, as many real clusters would each parse once in
    parallel. Bounded: the oldest entries go first.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: dict[str, Loaded] = {}

    def get(self, manifest_id: str, resources: Callable[[], list[BundleResource]]) -> Loaded:
        loaded = self._entries.get(manifest_id)
        if loaded is None:
            files = tuple(resources())
            plain = None
            if bundle_render.kind_of(files, DeploymentOptions()) == bundle_render.MANIFESTS:
                # A bad file is reported when the bundle is rendered for a cluster:
                # the options chosen for it may not even deploy that file.
                with contextlib.suppress(RenderError):
                    plain = parse(files)
            loaded = Loaded(files, plain)
            if len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            self._entries[manifest_id] = loaded
        return loaded


async def objects_for(
    loaded: Loaded,
    options: DeploymentOptions,
    *,
    bundle: str,
    cluster: ClusterContext,
    capabilities: Callable[[], Awaitable[Capabilities]] | None = None,
) -> tuple[dict[str, Any], ...]:
    """What ``cluster`` should hold of this bundle; RenderError names the file and cause.

    Plain manifests without overlays come from the cache; anything else
    (overlays chosen per target, Helm values templated per cluster, a
    kustomization) is rendered for this cluster, engines in a thread; Helm
    sees the cluster's version and APIs through ``capabilities``.
    """
    kept = loaded.placed_for(options)
    if kept is not None:
        return kept
    overlays = options.yaml.overlays if options.yaml is not None else ()
    kind = bundle_render.kind_of(loaded.resources, options)
    if loaded.plain is not None and not overlays and kind == bundle_render.MANIFESTS:
        return loaded.place(options)
    caps = Capabilities()
    if capabilities is not None and kind == bundle_render.HELM:
        caps = await capabilities()
    try:
        return await asyncio.to_thread(
            bundle_render.render_placed,
            loaded.resources,
            options,
            bundle=bundle,
            cluster=cluster,
            kube_version=caps.kube_version,
            api_versions=caps.api_versions,
        )
    except BundleError as exc:
        raise RenderError(str(exc), file=exc.file) from exc


def object_key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    """(apiVersion, kind, namespace, name): how a cluster tells objects apart."""
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])
