"""The reconciler: makes the cluster hold the desired bundles and says how each is doing.

It is the same code for simulated and real clusters: it talks to a
:class:`ClusterBackend`, gets resources through a :class:`BlobProvider`, and
keeps one :class:`BundleStatus` per desired bundle for the reporter. One loop
works through bundles whose next step is due:

* a new or changed deployment ID is fetched, rendered and applied (WaitApplied
  while the first attempt for that deployment runs; ErrApplied with the
  message and per-object conditions when it fails, retried with doubling
  backoff unless retrying cannot help, e.g. a render error);
* an applied deployment is observed, often while not Ready, rarely once Ready;
  drift shows as Modified and is re-applied when ``correctDrift`` is set;
* bundles no longer desired are removed (``keepResources`` respected) and
  vanish from the status at once.

Failures are data: nothing a bundle or the backend does escapes this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from bundles.render import target_namespace
from bundles.templating import ClusterContext
from edgeagent.backend import Capabilities, ClusterBackend, Deployment, Observation
from edgeagent.blobs import BlobProvider
from edgeagent.errors import ApplyError, BlobError, DeploymentError
from edgeagent.render import ParseCache, objects_for
from edgeagent.settings import AgentSettings
from edgeagent.tasks import Alarm, AlarmClock, Wakeup
from edgeagent.values import with_values_from
from protocol.codec import decode_resources
from protocol.errors import DecodeError
from protocol.ids import manifest_of
from protocol.messages import BundleStatus, DesiredBundle, ResourceCondition
from protocol.models import BundleResource, DeploymentOptions
from protocol.states import State

log = structlog.get_logger(__name__)

NEVER = math.inf
CAPABILITIES_TTL = 60.0  # seconds: a CRD installed since shows up within a minute
MAX_SLEEP = 3600.0  # seconds the loop sleeps at most without a look
MAX_ALARMS = 4  # pending alarms kept (see Reconciler._alarm_by)


@dataclass
class _Record:
    desired: DesiredBundle
    status: BundleStatus
    applied: Deployment | None = None
    attempted: str = ""  # deployment ID of the last apply attempt
    failures: int = 0
    reapply: bool = False
    due: float = 0.0
    waiting: bool = False  # for dependencies to become Ready

    @property
    def holding(self) -> bool:
        """Paused with something applied: keep that (correcting its drift), roll nothing out."""
        return self.desired.paused and self.applied is not None


@dataclass
class _Removal:
    keep_resources: bool
    delete_namespace: str = ""  # Fleet's deleteNamespace: the namespace to go too
    failures: int = 0
    due: float = 0.0

    @classmethod
    def of(cls, options: DeploymentOptions) -> _Removal:
        namespace = target_namespace(options) if options.delete_namespace else ""
        return cls(options.keep_resources, namespace)


@dataclass
class Reconciler:
    """Drives the backend towards the desired bundles; see the module docstring."""

    backend: ClusterBackend
    blobs: BlobProvider
    settings: AgentSettings
    cluster: str = ""
    # What per-cluster templates may read about this cluster (name, labels).
    context: ClusterContext = field(default_factory=lambda: ClusterContext(name=""))
    version: int = 0
    parsed: ParseCache = field(default_factory=ParseCache)
    # Called on every status change (the reporter wakes on it instead of polling).
    on_change: Callable[[], None] | None = None
    _records: dict[str, _Record] = field(default_factory=dict)
    _removals: dict[str, _Removal] = field(default_factory=dict)
    _known: bool = False
    _prune_pending: bool = False
    # Bundles the cluster held when this agent started: dropping one removes it
    # even if this process never applied it (it may be paused or waiting).
    _held: set[str] = field(default_factory=set)
    _caps: tuple[float, Capabilities] | None = None
    _wake: Wakeup = field(default_factory=Wakeup)
    _alarms: dict[float, Alarm] = field(default_factory=dict)  # by when

    # --- inputs -----------------------------------------------------------------

    def set_desired(self, desired: Mapping[str, DesiredBundle]) -> None:
        """The complete desired state; the first call also prunes what the cluster holds."""
        for name in list(self._records):
            if name not in desired:
                record = self._records.pop(name)
                if record.applied is not None or record.attempted or name in self._held:
                    self._removals[name] = _Removal.of(record.desired.options)
                self._changed()
        for name, message in desired.items():
            self._removals.pop(name, None)
            existing = self._records.get(name)
            if existing is None:
                self._records[name] = _Record(
                    desired=message,
                    status=BundleStatus(
                        bundle=name, deployment_id=message.deployment_id, state=State.WAIT_APPLIED
                    ),
                )
                self._changed(notify=False)
            elif existing.desired is not message and existing.desired != message:
                if existing.desired.deployment_id != message.deployment_id:
                    existing.failures = 0
                existing.desired = message
                existing.due = 0.0
        if not self._known:
            self._known = True
            self._prune_pending = True
        self._wake.set()

    def poke(self, bundle: str) -> None:
        """Observe ``bundle`` now rather than at its next interval.

        A backend that watches the cluster (the Kubernetes backend's drift
        watches) calls this when an applied object changed. A bundle that is
        not applied yet, or is backing off after failures, keeps its schedule.
        """
        record = self._records.get(bundle)
        if record is None or record.applied is None or record.failures:
            return
        if record.applied.deployment_id != record.desired.deployment_id:
            return
        record.due = min(record.due, self._now())
        self._wake.set()

    def statuses(self) -> tuple[BundleStatus, ...]:
        """The status of every desired bundle, by bundle name."""
        return tuple(self._records[name].status for name in sorted(self._records))

    def all_ready(self) -> bool:
        return bool(self._records) and all(
            r.status.state == State.READY for r in self._records.values()
        )

    @property
    def desired_known(self) -> bool:
        return self._known

    # --- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile forever; cancel to stop."""
        loop = asyncio.get_running_loop()
        clock = AlarmClock.of(loop)
        try:
            while True:
                if self._prune_pending:
                    self._prune_pending = False
                    await self._prune()
                await self.step_due(loop.time())
                self._wake.clear()
                due = self._next_due()
                if due > loop.time():
                    self._alarm_by(clock, due)
                    await self._wake.wait()
        finally:
            for alarm in self._alarms.values():
                alarm.cancel()
            self._alarms.clear()

    def _alarm_by(self, clock: AlarmClock, due: float) -> None:
        """Have an alarm wake the loop by ``due`` (an hour away at most).

        An alarm that an earlier one supersedes is kept, not cancelled: it is
        usually when the next step is due anyway (a Ready bundle's next look),
        and if not, it only wakes the loop to find nothing due. A process
        running thousands of agents is spared a timer made and cancelled per
        wake-up. A few are kept at most.
        """
        due = min(due, clock.time() + MAX_SLEEP)
        for when in self._alarms:
            if when <= due:
                return
        self._alarms[due] = clock.at(due, self._ring, due)
        if len(self._alarms) > MAX_ALARMS:
            self._alarms.pop(max(self._alarms)).cancel()

    def _ring(self, when: float) -> None:
        self._alarms.pop(when, None)
        self._wake.set()

    async def step_due(self, now: float) -> None:
        """Run every step that is due at ``now``."""
        if self._removals:
            for name, removal in list(self._removals.items()):
                if removal.due <= now:
                    await self._remove(name, removal)
        for name in sorted(self._records):
            record = self._records.get(name)
            if record is not None and record.due <= now:
                await self._step(record)

    def _next_due(self) -> float:
        due = min((r.due for r in self._records.values()), default=NEVER)
        if self._removals:
            due = min(due, *(r.due for r in self._removals.values()))
        return due

    def _deadline(self) -> contextlib.AbstractAsyncContextManager[object]:
        """``apply_timeout`` around a backend call, if the backend waits on I/O at all."""
        if self.backend.waits_on_io:
            return asyncio.timeout(self.settings.apply_timeout)
        return contextlib.nullcontext()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _backoff(self, failures: int) -> float:
        """Doubling pause, capped, at a random point of its upper half.

        The jitter matters at fleet scale: agents that failed together (a
        blob download that timed out for a whole site) must not retry together.
        """
        s = self.settings
        ceiling = min(s.retry_max, s.retry_initial * 2 ** max(0, failures - 1))
        return float(ceiling * (0.5 + 0.5 * random.random()))

    def _changed(self, *, notify: bool = True) -> None:
        """A status changed; ``notify=False`` leaves it for the next report to carry.

        WaitApplied is quiet: the control plane already counts a targeted
        cluster that has not reported the deployment as WaitApplied (or, on an
        update, as OutOfSync), and at fleet scale a report per cluster at the
        start of every rollout would compete with the blob downloads it waits on.
        """
        self.version += 1
        if notify and self.on_change is not None:
            self.on_change()

    def _set(
        self,
        record: _Record,
        state: State,
        *,
        message: str = "",
        non_ready: tuple[ResourceCondition, ...] = (),
        modified: tuple[ResourceCondition, ...] = (),
        notify: bool = True,
        deployment_id: str | None = None,
    ) -> None:
        """Record ``state`` of ``deployment_id`` (by default the desired deployment)."""
        if deployment_id is None:
            # A paused bundle reports the deployment it holds, not the desired one.
            held = record.applied if record.holding else None
            deployment_id = held.deployment_id if held else record.desired.deployment_id
        current = record.status
        if (
            current.state == state
            and current.deployment_id == deployment_id
            and current.message == message
            and current.non_ready == non_ready
            and current.modified == modified
        ):
            return  # most observations find what the last one found
        record.status = BundleStatus(
            bundle=record.desired.bundle,
            deployment_id=deployment_id,
            state=state,
            message=message,
            non_ready=non_ready,
            modified=modified,
        )
        self._changed(notify=notify)
        if state == State.READY:
            self._wake_dependents()

    def _wake_dependents(self) -> None:
        waiting = [other for other in self._records.values() if other.waiting]
        for other in waiting:
            other.due = 0.0
        if waiting:
            self._wake.set()

    # --- steps -----------------------------------------------------------------

    async def _step(self, record: _Record) -> None:
        desired = record.desired
        needs_apply = (
            record.reapply
            or record.applied is None
            or record.applied.deployment_id != desired.deployment_id
            or (
                record.applied.options is not desired.options
                and record.applied.options != desired.options
            )
        )
        try:
            if needs_apply and record.holding:
                await (self._reapply_held(record) if record.reapply else self._observe(record))
            elif needs_apply and desired.paused:
                message = (
                    "paused: the cluster holds an earlier deployment, kept and not observed "
                    "until resumed"
                    if desired.bundle in self._held
                    else "paused: not deployed until resumed"
                )
                self._set(record, State.PENDING, message=message)
                record.due = NEVER  # until the desired state changes
            elif needs_apply and (waiting := self._unready_dependencies(desired)):
                record.waiting = True
                message = f"waiting for {', '.join(waiting)} to be Ready"
                if cycle := self._dependency_cycle(desired.bundle):
                    message += f" (a dependsOn cycle: {' -> '.join(cycle)})"
                self._set(record, State.WAIT_APPLIED, message=message)
                record.due = self._now() + self.settings.observe_interval_not_ready
            elif needs_apply:
                record.waiting = False
                await self._apply(record)
            else:
                await self._observe(record)
        except Exception as exc:  # a backend bug must not stop the other bundles
            log.exception("reconcile.step_failed", cluster=self.cluster, bundle=desired.bundle)
            record.failures += 1
            self._set(record, State.ERR_APPLIED, message=f"internal error: {exc!r}")
            record.due = self._now() + self._backoff(record.failures)
        if record.desired is not desired:
            # Changed while this step awaited the backend: the step's own schedule
            # (a Ready bundle's next look, observe_interval away) must not delay the change.
            record.due = 0.0

    async def _capabilities(self) -> Capabilities:
        """The cluster's version and APIs, asked again at most once a minute."""
        now = self._now()
        if self._caps is None or now - self._caps[0] > CAPABILITIES_TTL:
            try:
                self._caps = (now, await self.backend.capabilities())
            except Exception as exc:  # Helm's defaults are a better fallback than no render
                log.warning("reconcile.capabilities_failed", cluster=self.cluster, error=repr(exc))
                return self._caps[1] if self._caps else Capabilities()
        return self._caps[1]

    def _unready_dependencies(self, desired: DesiredBundle) -> list[str]:
        """Bundles ``desired`` depends on that are not Ready here (Fleet's ``dependsOn``).

        Ready means Ready at the deployment the dependency is meant to have (or
        holds, if paused): an older deployment's Ready does not count.
        """
        return [name for name in desired.depends_on if not self._ready_here(name)]

    def _dependency_cycle(self, start: str) -> list[str]:
        """A dependsOn path from ``start`` back to itself among the desired bundles, if any.

        Such bundles wait for each other forever; the status says so, so that
        the bundles' authors see why, rather than only what each waits for.
        """
        path: list[str] = [start]
        seen: set[str] = set()

        def visit(name: str) -> bool:
            record = self._records.get(name)
            for dependency in record.desired.depends_on if record is not None else ():
                if dependency == start:
                    path.append(start)
                    return True
                if dependency in seen:
                    continue
                seen.add(dependency)
                path.append(dependency)
                if visit(dependency):
                    return True
                path.pop()
            return False

        return path if visit(start) else []

    def _ready_here(self, name: str) -> bool:
        record = self._records.get(name)
        if record is None or record.status.state != State.READY:
            return False
        return record.holding or record.status.deployment_id == record.desired.deployment_id

    async def _reapply_held(self, record: _Record) -> None:
        """correctDrift of a paused bundle: put back the deployment it holds, not the new one."""
        assert record.applied is not None
        try:
            async with self._deadline():
                await self.backend.apply(record.applied)
        except (DeploymentError, TimeoutError) as exc:
            record.failures += 1
            self._set(record, State.ERR_APPLIED, message=f"correcting drift: {exc}")
            record.due = self._now() + self._backoff(record.failures)
            return
        record.reapply = False
        record.failures = 0
        await self._observe(record)

    async def _prepare(self, desired: DesiredBundle) -> Deployment:
        manifest = manifest_of(desired.deployment_id)
        blob = await self.blobs.get(manifest)

        def resources() -> list[BundleResource]:
            try:
                return decode_resources(blob)
            except DecodeError as exc:
                raise BlobError(
                    f"resources {manifest} are not a resource list: {exc}",
                    manifest_id=manifest,
                    transient=False,
                ) from exc

        objects = await objects_for(
            self.parsed.get(manifest, resources),
            await with_values_from(self.backend, desired.options),
            bundle=desired.bundle,
            cluster=self.context,
            capabilities=self._capabilities,
        )
        return Deployment(desired.bundle, desired.deployment_id, desired.options, objects)

    async def _apply(self, record: _Record) -> None:
        desired = record.desired
        first = record.attempted != desired.deployment_id
        record.attempted = desired.deployment_id
        if first:
            self._set(record, State.WAIT_APPLIED, notify=False, deployment_id=desired.deployment_id)
        try:
            deployment = await self._prepare(desired)
            async with self._deadline():
                await self.backend.apply(deployment)
        except (DeploymentError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                exc = ApplyError(f"apply timed out after {self.settings.apply_timeout:.0f} s")
            conditions = exc.conditions if isinstance(exc, ApplyError) else ()
            record.failures += 1
            self._set(
                record,
                State.ERR_APPLIED,
                message=str(exc),
                non_ready=conditions,
                deployment_id=desired.deployment_id,
            )
            if exc.transient:
                record.due = self._now() + self._backoff(record.failures)
            else:
                record.due = NEVER  # until the desired state changes
            # The first failure of a streak is news; the retries are not.
            emit = log.warning if record.failures == 1 else log.debug
            emit(
                "reconcile.apply_failed",
                cluster=self.cluster,
                bundle=desired.bundle,
                deployment_id=desired.deployment_id,
                error=str(exc),
                failures=record.failures,
            )
            return
        log.info(
            "reconcile.applied",
            cluster=self.cluster,
            bundle=desired.bundle,
            deployment_id=desired.deployment_id,
            objects=len(deployment.objects),
        )
        record.applied = deployment
        record.reapply = False
        record.failures = 0
        await self._observe(record)

    async def _observe(self, record: _Record) -> None:
        assert record.applied is not None
        try:
            async with self._deadline():
                seen: Observation = await self.backend.observe(record.applied)
        except TimeoutError:
            seen = Observation(state=State.NOT_READY)
        s = self.settings
        # What was seen is about the applied deployment, even if another is desired by now.
        observed = record.applied.deployment_id
        if seen.state == State.MODIFIED:
            self._set(record, State.MODIFIED, modified=seen.modified, deployment_id=observed)
            if record.desired.options.correct_drift:
                record.reapply = True
                record.due = self._now() + (
                    self._backoff(record.failures) if record.failures else 0
                )
                log.info(
                    "reconcile.correcting_drift", cluster=self.cluster, bundle=record.desired.bundle
                )
            else:
                record.due = self._now() + s.observe_interval_not_ready
        elif seen.state == State.READY:
            self._set(record, State.READY, deployment_id=observed)
            record.due = self._now() + s.observe_interval
        else:
            self._set(record, State.NOT_READY, non_ready=seen.non_ready, deployment_id=observed)
            record.due = self._now() + s.observe_interval_not_ready

    async def _remove(self, name: str, removal: _Removal) -> None:
        try:
            async with self._deadline():
                await self.backend.remove(
                    name,
                    keep_resources=removal.keep_resources,
                    delete_namespace=removal.delete_namespace,
                )
        except Exception as exc:
            removal.failures += 1
            removal.due = self._now() + self._backoff(removal.failures)
            log.warning(
                "reconcile.remove_failed", cluster=self.cluster, bundle=name, error=repr(exc)
            )
            return
        self._removals.pop(name, None)
        log.info("reconcile.removed", cluster=self.cluster, bundle=name)

    async def _prune(self) -> None:
        try:
            held = await self.backend.deployed_bundles()
        except Exception as exc:
            log.warning("reconcile.prune_failed", cluster=self.cluster, error=repr(exc))
            return
        self._held = set(held)
        for name in held - set(self._records) - set(self._removals):
            self._removals[name] = _Removal(keep_resources=False)
