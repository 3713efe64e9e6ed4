"""The simulated cluster: an in-memory :class:`ClusterBackend`.

It lets one process run thousands of agents (``shoal demo``, benchmarks) and
lets tests drive every state a real cluster can reach: applies that fail
(``failure_rate``, seeded for reproducible runs), objects that become ready a
little after apply (``readiness_delay``), and drift, injected on demand with
:meth:`SimulatedCluster.inject_drift` or at random (``drift_rate``).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeagent.backend import Capabilities, Deployment, Observation, condition_of
from edgeagent.errors import ApplyError
from edgeagent.render import object_key
from edgeagent.settings import AgentSettings
from protocol.states import State

ObjectKey = tuple[str, str, str, str]


@dataclass
class _Held:
    deployment_id: str
    applied_at: float
    objects: dict[ObjectKey, dict[str, Any]]
    drifted: dict[ObjectKey, str] = field(default_factory=dict)


class SimulatedCluster:
    """An in-memory cluster; ``clock`` is injectable so tests need not sleep."""

    waits_on_io = False

    def __init__(
        self,
        *,
        readiness_delay: float = 0.2,
        failure_rate: float = 0.0,
        drift_rate: float = 0.0,
        seed: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.readiness_delay = readiness_delay
        self.failure_rate = failure_rate
        self.drift_rate = drift_rate
        self._seed = seed
        self._random: random.Random | None = None  # made on first use: 2.5 KB per cluster
        self._clock = clock or time.monotonic
        self._held: dict[str, _Held] = {}
        # ConfigMaps and Secrets put on the cluster by hand: (kind, namespace, name) -> data
        self.config: dict[tuple[str, str, str], dict[str, str]] = {}
        self.apply_count = 0
        self.fail_next: str | None = None

    @classmethod
    def from_settings(cls, settings: AgentSettings, *, seed: int | None = None) -> SimulatedCluster:
        return cls(
            readiness_delay=settings.sim_readiness_delay,
            failure_rate=settings.sim_failure_rate,
            drift_rate=settings.sim_drift_rate,
            seed=settings.sim_seed if seed is None else seed,
        )

    def _rng(self) -> random.Random:
        """The cluster's own random source; a fleet that never fails or drifts makes none."""
        if self._random is None:
            self._random = random.Random(self._seed)
        return self._random

    # --- ClusterBackend -----------------------------------------------------

    async def apply(self, deployment: Deployment) -> None:
        self.apply_count += 1
        if self.fail_next is not None:
            message, self.fail_next = self.fail_next, None
            raise ApplyError(message)
        if self.failure_rate and self._rng().random() < self.failure_rate:
            first = deployment.objects[0] if deployment.objects else None
            conditions = (condition_of(first, "simulated failure"),) if first else ()
            raise ApplyError("simulated apply failure", conditions=conditions)
        # Held by reference: nothing changes a deployment's objects once rendered,
        # and _drift copies an object before it changes it.
        objects = {object_key(o): o for o in deployment.objects}
        previous = self._held.get(deployment.bundle)
        unchanged = previous is not None and previous.deployment_id == deployment.deployment_id
        applied_at = previous.applied_at if unchanged and previous else self._clock()
        self._held[deployment.bundle] = _Held(deployment.deployment_id, applied_at, objects)

    async def remove(
        self, bundle: str, *, keep_resources: bool, delete_namespace: str = ""
    ) -> None:
        self._held.pop(bundle, None)

    async def observe(self, deployment: Deployment) -> Observation:
        held = self._held.get(deployment.bundle)
        if held is None or held.deployment_id != deployment.deployment_id:
            return Observation(
                state=State.MODIFIED,
                modified=tuple(condition_of(o, "missing") for o in deployment.objects),
            )
        if self.drift_rate and not held.drifted and self._rng().random() < self.drift_rate:
            self._drift(held, None, None, delete=False)
        if held.drifted:
            return Observation(
                state=State.MODIFIED,
                modified=tuple(
                    condition_of(deployment_obj, held.drifted[key])
                    for key, deployment_obj in _by_key(deployment).items()
                    if key in held.drifted
                ),
            )
        if self._clock() - held.applied_at < self.readiness_delay:
            return Observation(
                state=State.NOT_READY,
                non_ready=tuple(condition_of(o, "starting") for o in deployment.objects),
            )
        return Observation(state=State.READY)

    async def deployed_bundles(self) -> set[str]:
        return set(self._held)

    async def capabilities(self) -> Capabilities:
        return Capabilities()

    async def read_key(self, kind: str, namespace: str, name: str, key: str) -> str | None:
        return self.config.get((kind, namespace, name), {}).get(key)

    # --- test and demo hooks -------------------------------------------------

    def inject_drift(
        self, bundle: str, kind: str | None = None, name: str | None = None, *, delete: bool = False
    ) -> int:
        """Change (or delete) the bundle's objects matching kind/name; returns how many."""
        held = self._held.get(bundle)
        if held is None:
            return 0
        return self._drift(held, kind, name, delete=delete)

    def objects(self, bundle: str) -> list[dict[str, Any]]:
        held = self._held.get(bundle)
        return [copy.deepcopy(o) for o in held.objects.values()] if held else []

    def deployment_of(self, bundle: str) -> str | None:
        held = self._held.get(bundle)
        return held.deployment_id if held else None

    def _drift(self, held: _Held, kind: str | None, name: str | None, *, delete: bool) -> int:
        hits = [
            key
            for key in held.objects
            if (kind is None or key[1] == kind) and (name is None or key[3] == name)
        ]
        if kind is None and name is None:
            hits = hits[:1]
        for key in hits:
            if delete:
                del held.objects[key]
                held.drifted[key] = "deleted"
            else:
                obj = copy.deepcopy(held.objects[key])
                obj.setdefault("metadata", {}).setdefault("labels", {})["shoal.drift"] = "1"
                held.objects[key] = obj
                held.drifted[key] = "modified"
        return len(hits)


def _by_key(deployment: Deployment) -> dict[ObjectKey, dict[str, Any]]:
    return {object_key(o): o for o in deployment.objects}
