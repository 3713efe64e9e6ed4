"""API discovery: which URL serves a kind, and whether its objects live in namespaces.

A bundle names objects by ``apiVersion`` and ``kind``; the API serves them
under a lower-case plural (``Deployment`` -> ``deployments``) that is either
namespaced or cluster-wide. Guessing the plural fails for real kinds
(``NetworkPolicy`` -> ``networkpolicies``, ``Endpoints``) and for custom
resources, so the backend asks the API's discovery endpoints, one group
version at a time (``/api/v1``, ``/apis/<group>/<version>``), as it meets
them. Answers are cached for the agent's lifetime; a kind the cache does not
know makes it ask again, which is how a kind appears once its CRD is
Established.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from edgeagent.kube.client import KubeClient

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Resource:
    """One kind as the API serves it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "") -> str:
        """The collection (no name) or object URL; ``namespace`` is ignored if not namespaced."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


def group_version_path(api_version: str) -> str:
    return f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"


class Discovery:
    """Cached discovery over a :class:`KubeClient`; see the module docstring."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client
        self._kinds: dict[str, dict[str, Resource]] = {}  # apiVersion -> kind -> Resource

    async def resource(self, api_version: str, kind: str) -> Resource | None:
        """The resource serving ``kind`` in ``api_version``; None if the API serves none."""
        known = self._kinds.get(api_version)
        if known is None or kind not in known:
            known = await self._load(api_version)
        return known.get(kind)

    async def capabilities(self) -> tuple[str | None, tuple[str, ...]]:
        """(the server's version, every served group-version), as Helm's ``.Capabilities``."""
        version = await self._client.get("/version")
        core = await self._client.get("/api")
        groups = await self._client.get("/apis")
        served = [str(v) for v in (core or {}).get("versions", [])]
        for group in (groups or {}).get("groups", []):
            served += [str(v.get("groupVersion", "")) for v in group.get("versions", [])]
        git_version = (version or {}).get("gitVersion")
        return (
            str(git_version).split("+")[0] if git_version else None,
            tuple(sorted({v for v in served if v})),
        )

    def forget(self, api_version: str) -> None:
        """Ask the API again next time (e.g. after a CRD of this group changed)."""
        self._kinds.pop(api_version, None)

    async def _load(self, api_version: str) -> dict[str, Resource]:
        group, _, version = api_version.rpartition("/")
        listing = await self._client.get(group_version_path(api_version))
        kinds: dict[str, Resource] = {}
        for item in (listing or {}).get("resources", []):
            name = str(item.get("name", ""))
            if not name or "/" in name:  # subresources such as deployments/status
                continue
            kinds[str(item.get("kind", ""))] = Resource(
                group=group,
                version=version,
                plural=name,
                kind=str(item.get("kind", "")),
                namespaced=bool(item.get("namespaced")),
            )
        self._kinds[api_version] = kinds
        log.debug("kube.discovered", api_version=api_version, kinds=len(kinds))
        return kinds
