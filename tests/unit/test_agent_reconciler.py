"""The reconciler on the simulated backend: apply, readiness, changes, removal, failures, drift."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from edgeagent.backend import Capabilities, Deployment, Observation
from edgeagent.blobs import Blobs
from edgeagent.errors import ApplyError
from edgeagent.membus import MemoryBus
from edgeagent.reconciler import Reconciler
from edgeagent.settings import AgentSettings
from edgeagent.simulated import SimulatedCluster
from edgeagent.store import MemoryBlobCache
from protocol.codec import encode_resources
from protocol.ids import deployment_id, manifest_id
from protocol.messages import BundleStatus, DesiredBundle
from protocol.models import BundleResource, DeploymentOptions, HelmOptions, KeyRef, ValuesFrom
from protocol.states import State

FAST = AgentSettings(
    status_interval=0.02,
    heartbeat_interval=0.1,
    retry_initial=0.02,
    retry_max=0.1,
    observe_interval=0.05,
    observe_interval_not_ready=0.02,
    sim_readiness_delay=0.05,
)


def configmap(name: str, data: str = "v") -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: {data}\n"


class World:
    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.cluster = SimulatedCluster(readiness_delay=FAST.sim_readiness_delay, seed=1)
        self.blobs = Blobs(MemoryBlobCache(), self.bus, timeout=1.0)
        self.reconciler = Reconciler(backend=self.cluster, blobs=self.blobs, settings=FAST)
        self.desired: dict[str, DesiredBundle] = {}
        self.rev = 0

    def bundle(
        self,
        name: str,
        files: dict[str, str],
        options: DeploymentOptions | None = None,
        *,
        depends_on: tuple[str, ...] = (),
        paused: bool = False,
    ) -> DesiredBundle:
        options = options or DeploymentOptions()
        resources = [BundleResource(name=k, content=v) for k, v in files.items()]
        manifest = manifest_id(resources)
        self.bus.blobs[manifest] = encode_resources(resources)
        self.rev += 1
        message = DesiredBundle(
            bundle=name,
            rev=self.rev,
            deployment_id=deployment_id(manifest, options),
            options=options,
            depends_on=depends_on,
            paused=paused,
        )
        self.desired[name] = message
        self.reconciler.set_desired(dict(self.desired))
        return message

    def drop(self, name: str) -> None:
        del self.desired[name]
        self.reconciler.set_desired(dict(self.desired))

    def status(self, name: str) -> BundleStatus | None:
        return next((s for s in self.reconciler.statuses() if s.bundle == name), None)

    async def until(self, check: Callable[[], bool], timeout: float = 3.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            if loop.time() > deadline:
                raise AssertionError(f"timed out; statuses: {self.reconciler.statuses()}")
            await asyncio.sleep(0.005)

    async def state(self, name: str, state: State) -> BundleStatus:
        await self.until(lambda: (s := self.status(name)) is not None and s.state == state)
        found = self.status(name)
        assert found is not None
        return found


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    task = asyncio.create_task(w.reconciler.run())
    try:
        yield w
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_new_bundle_is_applied_then_ready(world: World) -> None:
    message = world.bundle("app", {"cm.yaml": configmap("a")})
    assert world.status("app") == BundleStatus(
        bundle="app", deployment_id=message.deployment_id, state=State.WAIT_APPLIED
    )
    await world.state("app", State.NOT_READY)
    await world.state("app", State.READY)
    assert world.cluster.deployment_of("app") == message.deployment_id
    assert world.cluster.objects("app")[0]["metadata"]["namespace"] == "default"
    assert world.reconciler.all_ready()


async def test_changed_deployment_is_reapplied(world: World) -> None:
    world.bundle("app", {"cm.yaml": configmap("a")})
    await world.state("app", State.READY)
    second = world.bundle("app", {"cm.yaml": configmap("a", data="changed")})
    await world.until(lambda: world.cluster.deployment_of("app") == second.deployment_id)
    ready = await world.state("app", State.READY)
    assert ready.deployment_id == second.deployment_id
    assert world.cluster.objects("app")[0]["data"] == {"k": "changed"}


async def test_removed_bundle_is_removed_and_leaves_status(world: World) -> None:
    world.bundle("app", {"cm.yaml": configmap("a")})
    world.bundle("other", {"cm.yaml": configmap("b")})
    await world.state("app", State.READY)
    world.drop("app")
    assert world.status("app") is None
    await world.until(lambda: world.cluster.deployment_of("app") is None)
    assert world.cluster.deployment_of("other") is not None


async def test_apply_error_is_errapplied_with_message_then_retried(world: World) -> None:
    world.cluster.fail_next = "admission webhook denied the ConfigMap"
    world.bundle("app", {"cm.yaml": configmap("a")})
    failed = await world.state("app", State.ERR_APPLIED)
    assert "admission webhook denied" in failed.message
    await world.state("app", State.READY)
    assert world.cluster.apply_count == 2


async def test_render_error_names_file_and_is_not_retried(world: World) -> None:
    world.bundle("app", {"good.yaml": configmap("a"), "bad.yaml": "apiVersion: v1\nkind: X\n"})
    failed = await world.state("app", State.ERR_APPLIED)
    assert "bad.yaml" in failed.message
    await asyncio.sleep(0.1)
    assert world.cluster.apply_count == 0
    # A fixed bundle replaces it.
    world.bundle("app", {"good.yaml": configmap("a")})
    await world.state("app", State.READY)


async def test_missing_blob_is_errapplied_and_retried(world: World) -> None:
    message = world.bundle("app", {"cm.yaml": configmap("a")})
    blob = world.bus.blobs.pop(message.deployment_id.split(":")[0])
    failed = await world.state("app", State.ERR_APPLIED)
    assert "not" in failed.message or "no blob" in failed.message
    world.bus.blobs[message.deployment_id.split(":")[0]] = blob
    await world.state("app", State.READY)


async def test_corrupt_blob_is_refused(world: World) -> None:
    message = world.bundle("app", {"cm.yaml": configmap("a")})
    world.bus.blobs[message.deployment_id.split(":")[0]] = encode_resources(
        [BundleResource(name="cm.yaml", content=configmap("evil"))]
    )
    failed = await world.state("app", State.ERR_APPLIED)
    assert "refusing" in failed.message
    assert world.cluster.apply_count == 0


async def test_drift_is_reported_as_modified(world: World) -> None:
    world.bundle("app", {"cm.yaml": configmap("a") + "---\n" + configmap("b")})
    await world.state("app", State.READY)
    assert world.cluster.inject_drift("app", kind="ConfigMap", name="b") == 1
    modified = await world.state("app", State.MODIFIED)
    assert [c.name for c in modified.modified] == ["b"]
    await asyncio.sleep(0.1)
    assert world.status("app") is not None
    assert world.status("app").state == State.MODIFIED  # type: ignore[union-attr]


async def test_drift_is_corrected_with_correct_drift(world: World) -> None:
    world.bundle("app", {"cm.yaml": configmap("a")}, DeploymentOptions(correctDrift=True))
    await world.state("app", State.READY)
    world.cluster.inject_drift("app", delete=True)
    await world.until(lambda: world.cluster.apply_count == 2)
    await world.state("app", State.READY)
    assert len(world.cluster.objects("app")) == 1


async def test_prunes_bundles_the_cluster_holds_but_nobody_wants() -> None:
    w = World()
    await w.cluster.apply(Deployment("stale", "s-x:y", DeploymentOptions(), ()))
    fresh = Reconciler(backend=w.cluster, blobs=w.blobs, settings=FAST)
    fresh.set_desired({})
    task = asyncio.create_task(fresh.run())
    try:
        await w.until(lambda: w.cluster.deployment_of("stale") is None)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_random_failures_are_reproducible() -> None:
    async def run(seed: int) -> list[bool]:
        cluster = SimulatedCluster(failure_rate=0.5, seed=seed)
        deployment = Deployment("app", "s-x:y", DeploymentOptions(), ())
        failed = []
        for _ in range(40):
            try:
                await cluster.apply(deployment)
            except ApplyError:
                failed.append(True)
            else:
                failed.append(False)
        return failed

    first = await run(42)
    assert first == await run(42)
    assert 0 < sum(first) < 40  # about half fail
    assert first != await run(43)


async def test_a_bundle_waits_for_its_dependencies_to_be_ready(world: World) -> None:
    """Fleet's dependsOn: nothing of the dependent bundle is applied before db is Ready."""
    world.cluster.readiness_delay = 0.3
    world.bundle("app", {"cm.yaml": configmap("a")}, depends_on=("db",))
    await world.until(lambda: (s := world.status("app")) is not None and bool(s.message))
    waiting = world.status("app")
    assert waiting is not None and waiting.state == State.WAIT_APPLIED
    assert waiting.message == "waiting for db to be Ready"
    world.bundle("db", {"cm.yaml": configmap("d")})
    await world.state("db", State.NOT_READY)
    assert world.cluster.deployment_of("app") is None
    await world.state("db", State.READY)
    await world.state("app", State.READY)


async def test_bundles_that_depend_on_each_other_say_so(world: World) -> None:
    world.bundle("app", {"cm.yaml": configmap("a")}, depends_on=("db",))
    world.bundle("db", {"cm.yaml": configmap("d")}, depends_on=("cache",))
    world.bundle("cache", {"cm.yaml": configmap("c")}, depends_on=("app",))
    await world.until(lambda: (s := world.status("cache")) is not None and bool(s.message))
    status = world.status("app")
    assert status is not None and status.state == State.WAIT_APPLIED
    assert status.message == (
        "waiting for db to be Ready (a dependsOn cycle: app -> db -> cache -> app)"
    )
    # Broken at one place, the chain unwinds.
    world.bundle("cache", {"cm.yaml": configmap("c")})
    await world.state("app", State.READY)
    await world.state("db", State.READY)


async def test_a_paused_bundle_keeps_what_it_holds_until_resumed(world: World) -> None:
    first = world.bundle("app", {"cm.yaml": configmap("a")})
    await world.state("app", State.READY)

    second = world.bundle("app", {"cm.yaml": configmap("a", data="new")}, paused=True)
    await asyncio.sleep(0.2)
    held = world.status("app")
    assert held is not None and held.deployment_id == first.deployment_id
    assert world.cluster.deployment_of("app") == first.deployment_id

    world.bundle("app", {"cm.yaml": configmap("a", data="new")})  # resumed
    await world.until(lambda: world.cluster.deployment_of("app") == second.deployment_id)
    assert (await world.state("app", State.READY)).deployment_id == second.deployment_id


async def test_a_paused_bundle_is_not_deployed_where_it_is_not_yet(world: World) -> None:
    world.bundle("app", {"cm.yaml": configmap("a")}, paused=True)
    pending = await world.state("app", State.PENDING)
    assert "paused" in pending.message
    assert world.cluster.deployment_of("app") is None


CHART = {
    "Chart.yaml": "apiVersion: v2\nname: till\nversion: 1.0.0\n",
    "values.yaml": "greeting: hello\nsite: none\n",
    "templates/cm.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: till\n"
        "data:\n  greeting: {{ .Values.greeting }}\n  site: {{ .Values.site | quote }}\n"
    ),
}


async def test_helm_values_from_a_configmap_and_a_secret_on_the_cluster(world: World) -> None:
    """Fleet's helm.valuesFrom: per-site values that never travel through git."""
    refs = (
        ValuesFrom(configMapKeyRef=KeyRef(name="site-values")),
        ValuesFrom(secretKeyRef=KeyRef(name="site-secret", namespace="ops", key="v.yaml")),
    )
    options = DeploymentOptions(
        namespace="shop", helm=HelmOptions(values={"greeting": "hi"}, valuesFrom=refs)
    )
    world.bundle("till", CHART, options)
    failed = await world.state("till", State.ERR_APPLIED)
    assert "ConfigMap shop/site-values" in failed.message

    world.cluster.config[("ConfigMap", "shop", "site-values")] = {"values.yaml": "site: s-0042\n"}
    world.cluster.config[("Secret", "ops", "site-secret")] = {"v.yaml": "greeting: moin\n"}
    await world.state("till", State.READY)
    [cm] = world.cluster.objects("till")
    assert cm["data"] == {"greeting": "moin", "site": "s-0042"}


async def test_delete_namespace_asks_the_backend_to_delete_the_bundles_namespace(
    world: World,
) -> None:
    calls: list[tuple[str, bool, str]] = []
    remove = world.cluster.remove

    async def recording(bundle: str, *, keep_resources: bool, delete_namespace: str = "") -> None:
        calls.append((bundle, keep_resources, delete_namespace))
        await remove(bundle, keep_resources=keep_resources, delete_namespace=delete_namespace)

    world.cluster.remove = recording  # type: ignore[method-assign]
    options = DeploymentOptions(defaultNamespace="popup", deleteNamespace=True)
    world.bundle("pop", {"cm.yaml": configmap("a")}, options)
    world.bundle("keep", {"cm.yaml": configmap("b")})
    await world.state("pop", State.READY)
    await world.state("keep", State.READY)
    world.drop("pop")
    world.drop("keep")
    await world.until(lambda: len(calls) == 2)
    assert sorted(calls) == [("keep", False, ""), ("pop", False, "popup")]


async def test_a_paused_bundle_with_correct_drift_puts_back_what_it_holds(world: World) -> None:
    options = DeploymentOptions(correctDrift=True)
    first = world.bundle("app", {"cm.yaml": configmap("a")}, options)
    await world.state("app", State.READY)
    world.bundle("app", {"cm.yaml": configmap("a", data="new")}, options, paused=True)
    await asyncio.sleep(0.1)

    world.cluster.inject_drift("app", "ConfigMap", "a", delete=True)

    await world.until(lambda: world.cluster.apply_count >= 2)
    ready = await world.state("app", State.READY)
    assert ready.deployment_id == first.deployment_id
    assert world.cluster.objects("app")[0]["data"] == {"k": "v"}  # the held one, not "new"


async def test_a_bundle_dropped_after_a_restart_is_removed_though_never_applied_here(
    world: World,
) -> None:
    world.bundle("app", {"cm.yaml": configmap("a")})
    await world.state("app", State.READY)
    # A new agent process on the same cluster, the bundle now paused: it applies nothing.
    again = Reconciler(backend=world.cluster, blobs=world.blobs, settings=FAST)
    task = asyncio.create_task(again.run())
    try:
        paused = world.desired["app"].model_copy(update={"paused": True, "deployment_id": "x:y"})
        again.set_desired({"app": paused})
        await world.until(lambda: any(s.state == State.PENDING for s in again.statuses()))
        assert "holds an earlier deployment" in again.statuses()[0].message

        again.set_desired({})  # the bundle is deleted while paused

        await world.until(lambda: world.cluster.deployment_of("app") is None)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_helm_sees_the_clusters_version_and_apis(world: World) -> None:
    """Charts gate objects on .Capabilities: the agent renders with its own cluster's."""

    async def capabilities() -> Capabilities:
        return Capabilities("v1.31.2", ("monitoring.coreos.com/v1", "v1", "apps/v1"))

    world.cluster.capabilities = capabilities  # type: ignore[method-assign]
    chart = {
        "Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\n",
        "templates/cm.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n"
            "data:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
            '  monitored: {{ .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" | quote }}\n'
        ),
    }
    world.bundle("web", chart)
    await world.state("web", State.READY)
    [cm] = world.cluster.objects("web")
    assert cm["data"] == {"kube": "v1.31.2", "monitored": "true"}


async def test_corrected_drift_puts_back_the_deployment_not_the_drifted_copy(world: World) -> None:
    world.bundle("app", {"cm.yaml": configmap("a")}, DeploymentOptions(correctDrift=True))
    await world.state("app", State.READY)
    assert world.cluster.inject_drift("app", kind="ConfigMap", name="a") == 1
    await world.until(lambda: world.cluster.apply_count == 2)
    await world.state("app", State.READY)
    labels = world.cluster.objects("app")[0]["metadata"].get("labels", {})
    assert "shoal.drift" not in labels


class HangingCluster(SimulatedCluster):
    """A backend that waits on I/O, whose first apply never returns."""

    waits_on_io = True

    def __init__(self) -> None:
        super().__init__(readiness_delay=0.0, seed=1)
        self.hung = 0

    async def apply(self, deployment: Deployment) -> None:
        if not self.hung:
            self.hung += 1
            await asyncio.Event().wait()
        await super().apply(deployment)


async def test_an_apply_that_hangs_is_errapplied_after_apply_timeout_then_retried() -> None:
    w = World()
    w.cluster = HangingCluster()
    w.reconciler = Reconciler(
        backend=w.cluster, blobs=w.blobs, settings=FAST.model_copy(update={"apply_timeout": 0.05})
    )
    task = asyncio.create_task(w.reconciler.run())
    try:
        w.bundle("app", {"cm.yaml": configmap("a")})
        failed = await w.state("app", State.ERR_APPLIED)
        assert "apply timed out" in failed.message
        await w.state("app", State.READY)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class GatedCluster(SimulatedCluster):
    """A backend whose applies wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(readiness_delay=0.0, seed=1)
        self.gate = asyncio.Event()
        self.applying = asyncio.Event()

    async def apply(self, deployment: Deployment) -> None:
        self.applying.set()
        await self.gate.wait()
        await super().apply(deployment)


async def test_a_change_that_arrives_during_an_apply_is_applied_next_and_not_reported_early() -> (
    None
):
    w = World()
    cluster = w.cluster = GatedCluster()
    # A Ready bundle is looked at again only after a minute: the change must not wait for that.
    w.reconciler = Reconciler(
        backend=cluster, blobs=w.blobs, settings=FAST.model_copy(update={"observe_interval": 60.0})
    )
    seen: list[tuple[str, State, str | None]] = []

    def record() -> None:
        status = w.status("app")
        if status is not None:
            seen.append((status.deployment_id, status.state, cluster.deployment_of("app")))

    w.reconciler.on_change = record
    task = asyncio.create_task(w.reconciler.run())
    try:
        first = w.bundle("app", {"cm.yaml": configmap("a")})
        await cluster.applying.wait()
        second = w.bundle("app", {"cm.yaml": configmap("a", data="changed")})
        cluster.gate.set()
        await w.until(lambda: cluster.deployment_of("app") == second.deployment_id)
        ready = await w.state("app", State.READY)
        assert ready.deployment_id == second.deployment_id
        # What was reported while the first deployment was on the cluster names the first.
        held_first = [(d, s) for d, s, on in seen if on == first.deployment_id]
        assert held_first
        assert all(d == first.deployment_id for d, _ in held_first)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_look_due_before_an_earlier_wake_up_still_happens_on_time() -> None:
    # A Ready bundle's next look is due in 0.3 s; a second bundle arriving meanwhile
    # needs the loop sooner (its apply, its readiness checks). The first bundle's
    # look must still come at its time, without the loop spinning in between.
    w = World()
    settings = FAST.model_copy(update={"observe_interval": 0.3})
    w.reconciler = Reconciler(backend=w.cluster, blobs=w.blobs, settings=settings)
    looks: list[tuple[str, float]] = []
    observe = w.cluster.observe
    loop = asyncio.get_running_loop()

    async def counted(deployment: Deployment) -> Observation:
        looks.append((deployment.bundle, loop.time()))
        return await observe(deployment)

    w.cluster.observe = counted  # type: ignore[method-assign]
    task = asyncio.create_task(w.reconciler.run())
    try:
        w.bundle("first", {"cm.yaml": configmap("a")})
        await w.state("first", State.READY)
        ready_at = loop.time()
        w.bundle("second", {"cm.yaml": configmap("b")})
        await w.state("second", State.READY)
        await asyncio.sleep(0.5)
        later = [at for bundle, at in looks if bundle == "first" and at > ready_at]
        assert later, looks
        assert later[0] - ready_at < 0.3 + 0.1
        # Ready bundles looked at every 0.3 s over 0.5 s: a handful of looks, not a spin.
        assert len(looks) < 20, looks
        assert len(w.reconciler._alarms) <= 4
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not w.reconciler._alarms  # a stopped reconciler leaves no timer behind
