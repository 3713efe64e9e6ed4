"""Fleet bundles end to end: a fleet.yaml Helm bundle through the control plane to agents.

The control plane stores one bundle; each agent renders it for itself: the
target customization its labels select (replicas), and ``${ }`` templates
over its own labels (region). The control plane renders every variant before
accepting a bundle, so a broken chart is refused with the template named and
the previous version stays.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from bundles.build import build_bundles
from controlplane.server import ControlPlane
from edgeagent.agent import Agent
from edgeagent.simulated import SimulatedCluster
from protocol import admin, codec, ids, subjects
from protocol.messages import DesiredBundle, ErrorReply, WireMessage
from protocol.states import State
from tests.integration.cp_helpers import admin_call, bundles, create_token
from tests.integration.test_agent_bus import FAST

FLEET_YAML = """\
namespace: shop
helm:
  releaseName: till
  values:
    region: ${ .ClusterLabels.region }
    shop: ${ .ClusterName | upper }
targetCustomizations:
  - name: prod
    clusterSelector:
      matchLabels:
        env: prod
    helm:
      values:
        replicas: 3
"""
CHART = """\
apiVersion: v2
name: till
version: 1.0.0
"""
VALUES = "replicas: 1\nregion: none\nshop: none\n"
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: till}
  template:
    metadata:
      labels: {app: till}
    spec:
      containers:
        - name: till
          image: registry.example/till:1
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: till-config
data:
  region: {{ .Values.region | quote }}
  shop: {{ .Values.shop | quote }}
"""


def write_repo(root: Path, *, broken: bool = False) -> Path:
    bundle = root / "till"
    (bundle / "templates").mkdir(parents=True)
    (bundle / "fleet.yaml").write_text(FLEET_YAML)
    (bundle / "Chart.yaml").write_text(CHART)
    (bundle / "values.yaml").write_text(VALUES)
    (bundle / "templates/deployment.yaml").write_text(DEPLOYMENT)
    config = CONFIGMAP.replace("| quote }}", "| nosuchfunction }}") if broken else CONFIGMAP
    (bundle / "templates/config.yaml").write_text(config)
    return root


async def apply_dir(nc: Client, root: Path, *, validate: bool = True) -> list[WireMessage]:
    built = await asyncio.to_thread(build_bundles, root, base_name="pos", validate=validate)
    store = await nc.jetstream().object_store(subjects.BLOB_BUCKET)
    replies = []
    for bundle in built.bundles:
        blob = codec.encode_resources(bundle.resources)
        manifest = ids.manifest_id_of_blob(blob)
        await store.put(manifest, blob)
        replies.append(
            await admin_call(nc, admin.BundleApply(spec=bundle.spec, manifest_id=manifest))
        )
    return replies


def agent(url: str, state_dir: Path, token: str, name: str, labels: dict[str, str]) -> Agent:
    return Agent.from_state_dir(
        state_dir,
        url=url,
        backend=SimulatedCluster(readiness_delay=FAST.sim_readiness_delay),
        settings=FAST,
        name=name,
        labels=labels,
        token=token,
    )


def held(agent: Agent, bundle: str) -> dict[str, dict[str, Any]]:
    backend = agent.reconciler.backend
    assert isinstance(backend, SimulatedCluster)
    return {o["kind"]: o for o in backend.objects(bundle)}


async def until_ready(nc: Client, bundle: str, count: int) -> None:
    for _ in range(500):
        summary = (await bundles(nc)).get(bundle)
        if summary is not None and summary.states.get(State.READY) == count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{bundle} not Ready on {count} clusters: {summary}")


async def test_each_agent_renders_its_customization_and_its_own_labels(
    control_plane: ControlPlane, nc: Client, tmp_path: Path
) -> None:
    token = await create_token(nc)
    url = control_plane.settings.nats_url
    dev_labels = {"env": "dev", "region": "eu-west"}
    prod_labels = {"env": "prod", "region": "us-east"}
    async with (
        agent(url, tmp_path / "a", token, "shop-7", dev_labels) as dev,
        agent(url, tmp_path / "b", token, "shop-9", prod_labels) as prod,
    ):
        [reply] = await apply_dir(nc, write_repo(tmp_path / "repo"))
        assert isinstance(reply, admin.BundleApplied), reply
        assert reply.name == "pos-till"
        await until_ready(nc, "pos-till", 2)

        dev_objects, prod_objects = held(dev, "pos-till"), held(prod, "pos-till")
        assert dev_objects["Deployment"]["spec"]["replicas"] == 1
        assert prod_objects["Deployment"]["spec"]["replicas"] == 3
        assert dev_objects["ConfigMap"]["data"] == {"region": "eu-west", "shop": "SHOP-7"}
        assert prod_objects["ConfigMap"]["data"] == {"region": "us-east", "shop": "SHOP-9"}
        assert {o["metadata"]["namespace"] for o in dev_objects.values()} == {"shop"}
        # One deployment per (class, customization): dev and prod differ, the
        # per-cluster values are the agents' own business.
        assert len(reply.deployment_ids) == 2


async def test_control_plane_refuses_a_broken_chart_and_keeps_the_good_version(
    control_plane: ControlPlane, nc: Client, tmp_path: Path
) -> None:
    [good] = await apply_dir(nc, write_repo(tmp_path / "good"))
    assert isinstance(good, admin.BundleApplied), good
    before = (await bundles(nc))["pos-till"]

    # Bypass the client's own check: the control plane must refuse by itself.
    [bad] = await apply_dir(nc, write_repo(tmp_path / "bad", broken=True), validate=False)

    assert isinstance(bad, ErrorReply), bad
    assert "templates/config.yaml" in bad.error
    assert "nosuchfunction" in bad.error
    assert "/tmp/" not in bad.error  # named as in the bundle, not where it was rendered
    assert (await bundles(nc))["pos-till"] == before


async def last_desired(nc: Client, bundle: str) -> DesiredBundle:
    """The desired-state message of ``bundle`` for the (one) class that has clusters."""
    js = nc.jetstream()
    sub = await js.subscribe(
        f"shoal.v1.desired.*.{bundle}",
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )
    try:
        msg = await sub.next_msg(timeout=5)
        return codec.decode(msg.data, DesiredBundle)
    finally:
        await sub.unsubscribe()


async def test_depends_on_and_paused_travel_with_the_desired_state(
    control_plane: ControlPlane, nc: Client, tmp_path: Path
) -> None:
    token = await create_token(nc)
    repo = tmp_path / "repo"
    for name, fleet in {
        "db": "labels:\n  role: database\n",
        "app": "dependsOn:\n  - selector:\n      matchLabels:\n        role: database\n",
    }.items():
        (repo / name).mkdir(parents=True)
        (repo / name / "fleet.yaml").write_text(fleet)
        (repo / name / "cm.yaml").write_text(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
        )
    async with agent(control_plane.settings.nats_url, tmp_path / "a", token, "shop-1", {}):
        await apply_dir(nc, repo)
        await until_ready(nc, "pos-app", 1)
        app = await last_desired(nc, "pos-app")
        assert app.depends_on == ("pos-db",)
        assert not app.paused

        (repo / "app" / "fleet.yaml").write_text("paused: true\n")
        (repo / "app" / "cm.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  v: '2'\n"
        )
        [reply] = [r for r in await apply_dir(nc, repo) if getattr(r, "name", "") == "pos-app"]
        assert isinstance(reply, admin.BundleApplied)
        paused = await last_desired(nc, "pos-app")
        assert paused.paused and paused.deployment_id == reply.deployment_ids[0]
        # The cluster keeps the deployment it had: the bundle is out of sync, not updated.
        await asyncio.sleep(0.5)
        summary = (await bundles(nc))["pos-app"]
        assert summary.states == {State.OUT_OF_SYNC: 1}, summary.states


async def test_a_depends_on_selector_picks_among_the_bundles_that_go_to_the_cluster(
    control_plane: ControlPlane, nc: Client, tmp_path: Path
) -> None:
    """db-eu goes to EU clusters, db-us to US ones: EU clusters wait for db-eu alone."""
    token = await create_token(nc)
    repo = tmp_path / "repo"
    fleets = {
        "db-eu": "labels: {role: db}\ntargetCustomizations:\n"
        "  - clusterSelector: {matchLabels: {region: us}}\n    doNotDeploy: true\n",
        "db-us": "labels: {role: db}\ntargetCustomizations:\n"
        "  - clusterSelector: {matchLabels: {region: eu}}\n    doNotDeploy: true\n",
        "app": "dependsOn:\n  - selector: {matchLabels: {role: db}}\n",
    }
    for name, fleet in fleets.items():
        (repo / name).mkdir(parents=True)
        (repo / name / "fleet.yaml").write_text(fleet)
        (repo / name / "cm.yaml").write_text(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
        )
    labels = {"region": "eu"}
    async with agent(control_plane.settings.nats_url, tmp_path / "a", token, "shop-1", labels) as a:
        await apply_dir(nc, repo)
        await until_ready(nc, "pos-app", 1)
        assert a.desired.effective()["pos-app"].depends_on == ("pos-db-eu",)
