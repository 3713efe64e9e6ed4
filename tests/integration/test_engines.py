"""Helm and Kustomize through the real engines: charts and trees the tests write, Fleet's examples.

Every chart and kustomization here is written by the test itself; the
conformance cases read rancher/fleet-examples from ``../shared/conformance``
and skip when it is absent.
"""

from __future__ import annotations

import copy
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from bundles.errors import ChartNotFound, HelmError, KustomizeError
from bundles.helm import BinaryHelm, HelmEngine, SdkHelm, default_engine, render_chart
from bundles.kustomize import build
from edgeagent.render import place
from protocol.manifests import ParsedObject
from protocol.models import DeploymentOptions


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


WEB_CHART = {
    "Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\n",
    "values.yaml": (
        "replicas: 1\n"
        "image:\n  repository: nginx\n  tag: '1.25'\n"
        "color: blue\n"
        "cache:\n  greeting: hello\n"
    ),
    "templates/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  namespace: {{ .Release.Namespace }}
spec:
  replicas: {{ .Values.replicas }}
  template:
    spec:
      containers:
      - name: web
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
""",
    "templates/configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  color: {{ .Values.color | quote }}
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
  monitoring: {{ .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" | quote }}
""",
    "templates/_helpers.tpl": '{{- define "web.name" -}}web{{- end }}\n',
    "templates/NOTES.txt": "Visit {{ .Release.Name }} in {{ .Release.Namespace }}.\n",
    "templates/migrate-job.yaml": """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: busybox
""",
    "crds/widgets.yaml": """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions: []
""",
    "charts/cache/Chart.yaml": "apiVersion: v2\nname: cache\nversion: 0.1.0\n",
    "charts/cache/values.yaml": "greeting: hi\nsize: small\n",
    "charts/cache/templates/configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-cache
data:
  greeting: {{ .Values.greeting }}
  size: {{ .Values.size }}
""",
}


@pytest.fixture
def web_chart(tmp_path: Path) -> Path:
    return write(tmp_path / "web", WEB_CHART)


def by_name(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects}


def test_chart_defaults_release_and_subchart(web_chart: Path) -> None:
    rendered = render_chart(web_chart, release_name="shop", namespace="apps")
    objects = by_name(rendered.object_dicts())

    assert set(objects) == {"shop-web", "shop-settings", "shop-cache"}
    deployment = objects["shop-web"]
    assert deployment["metadata"]["namespace"] == "apps"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    # The parent's values.yaml sets the subchart's greeting; its own default fills the rest.
    assert objects["shop-cache"]["data"] == {"greeting": "hello", "size": "small"}
    # Helm adds no labels or annotations of its own, and no namespace a template did not write.
    assert "labels" not in objects["shop-settings"]["metadata"]
    assert "namespace" not in objects["shop-settings"]["metadata"]
    # Each object says which template it came from.
    assert {item.file for item in rendered.objects} == {
        "web/templates/deployment.yaml",
        "web/templates/configmap.yaml",
        "web/charts/cache/templates/configmap.yaml",
    }


def test_notes_hooks_and_crds_are_not_release_objects(web_chart: Path) -> None:
    rendered = render_chart(web_chart, release_name="shop", namespace="apps")

    assert "shop-migrate" not in by_name(rendered.object_dicts())
    assert [h.obj["metadata"]["name"] for h in rendered.hooks] == ["shop-migrate"]
    assert [c.obj["metadata"]["name"] for c in rendered.crds] == ["widgets.example.com"]
    assert rendered.notes.strip() == "Visit shop in apps."


def test_values_override_defaults_deeply(web_chart: Path) -> None:
    rendered = render_chart(
        web_chart,
        release_name="shop",
        namespace="apps",
        values={"image": {"tag": "1.27"}, "cache": {"size": "large"}, "color": None},
    )
    objects = by_name(rendered.object_dicts())

    container = objects["shop-web"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.27"  # repository kept from values.yaml
    assert objects["shop-cache"]["data"] == {"greeting": "hello", "size": "large"}
    # null deletes a default, as with helm --set color=null: the template sees no color
    assert objects["shop-settings"]["data"]["color"] is None


def test_values_files_merge_in_order_then_values(web_chart: Path, tmp_path: Path) -> None:
    first = write(tmp_path, {"first.yaml": "replicas: 2\ncolor: red\nimage:\n  tag: '1.26'\n"})
    second = write(tmp_path, {"second.yaml": "replicas: 3\n"})
    rendered = render_chart(
        web_chart,
        release_name="shop",
        namespace="apps",
        values_files=[first / "first.yaml", second / "second.yaml"],
        values={"color": "green"},
    )
    objects = by_name(rendered.object_dicts())

    assert objects["shop-web"]["spec"]["replicas"] == 3
    image = objects["shop-web"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "nginx:1.26"
    assert objects["shop-settings"]["data"]["color"] == "green"


def test_a_missing_or_broken_values_file_is_named(web_chart: Path, tmp_path: Path) -> None:
    with pytest.raises(HelmError, match=r"missing\.yaml"):
        render_chart(
            web_chart, release_name="r", namespace="n", values_files=[tmp_path / "missing.yaml"]
        )
    broken = write(tmp_path, {"broken.yaml": "a: [1,\n"}) / "broken.yaml"
    with pytest.raises(HelmError, match=r"broken\.yaml") as caught:
        render_chart(web_chart, release_name="r", namespace="n", values_files=[broken])
    assert caught.value.file == str(broken)


def test_capabilities_follow_the_target_cluster(web_chart: Path) -> None:
    rendered = render_chart(
        web_chart,
        release_name="shop",
        namespace="apps",
        kube_version="v1.29.4",
        api_versions=["monitoring.coreos.com/v1"],
    )
    data = by_name(rendered.object_dicts())["shop-settings"]["data"]

    assert data["kube"] == "v1.29.4"
    assert data["monitoring"] == "true"


def test_a_template_error_names_the_template_and_the_chart(web_chart: Path) -> None:
    (web_chart / "templates" / "broken.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n"
        '  a: {{ include "no-such-template" . }}\n'
    )
    with pytest.raises(HelmError) as caught:
        render_chart(web_chart, release_name="shop", namespace="apps")

    message = str(caught.value)
    assert "web/templates/broken.yaml" in message
    assert "no-such-template" in message
    assert str(web_chart) in message


def test_a_declared_dependency_missing_from_charts_is_refused(tmp_path: Path) -> None:
    chart = write(
        tmp_path / "app",
        {
            "Chart.yaml": (
                "apiVersion: v2\nname: app\nversion: 0.1.0\n"
                "dependencies:\n- name: redis\n  version: 1.0.0\n"
                "  repository: https://charts.invalid\n"
            ),
            "templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
        },
    )
    with pytest.raises(HelmError, match="redis"):
        render_chart(chart, release_name="r", namespace="n")


def test_a_template_that_renders_a_nameless_object_is_named(tmp_path: Path) -> None:
    chart = write(
        tmp_path / "app",
        {
            "Chart.yaml": "apiVersion: v2\nname: app\nversion: 0.1.0\n",
            "templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {a: b}\n",
        },
    )
    with pytest.raises(HelmError, match=r"app/templates/cm\.yaml") as caught:
        render_chart(chart, release_name="r", namespace="n")
    assert caught.value.file == "app/templates/cm.yaml"


def test_a_missing_chart_is_chart_not_found(tmp_path: Path) -> None:
    with pytest.raises(ChartNotFound):
        render_chart(tmp_path / "nowhere", release_name="r", namespace="n")


def test_a_packaged_chart_renders_like_its_directory(web_chart: Path, tmp_path: Path) -> None:
    archive = tmp_path / "web-1.0.0.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(web_chart, arcname="web")

    packaged = render_chart(archive, release_name="shop", namespace="apps")
    unpacked = render_chart(web_chart, release_name="shop", namespace="apps")

    assert packaged.object_dicts() == unpacked.object_dicts()


def test_the_sdk_is_the_default_engine() -> None:
    assert default_engine().name == "sdk"


def test_forcing_an_engine_that_is_not_there_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHOAL_HELM", "binary")
    monkeypatch.setenv("SHOAL_HELM_BINARY", str(tmp_path / "no-helm-here"))
    with pytest.raises(HelmError, match="no-helm-here"):
        default_engine()
    monkeypatch.setenv("SHOAL_HELM", "tiller")
    with pytest.raises(HelmError, match="SHOAL_HELM"):
        default_engine()


@pytest.mark.skipif(shutil.which("helm") is None, reason="no helm binary on PATH")
def test_the_binary_renders_what_the_sdk_renders(web_chart: Path) -> None:
    helm = shutil.which("helm")
    assert helm is not None
    engines: list[HelmEngine] = [SdkHelm(), BinaryHelm(Path(helm))]
    results = [
        render_chart(
            web_chart,
            release_name="shop",
            namespace="apps",
            values={"replicas": 4},
            kube_version="v1.29.4",
            engine=engine,
        )
        for engine in engines
    ]
    sdk, binary = results
    assert sdk.object_dicts() == binary.object_dicts()
    assert [h.obj for h in sdk.hooks] == [h.obj for h in binary.hooks]
    assert [c.obj for c in sdk.crds] == [c.obj for c in binary.crds]


# -- Kustomize -------------------------------------------------------------------------------

KUSTOMIZE_TREE = {
    "base/kustomization.yaml": "resources:\n- deployment.yaml\n- service.yaml\n",
    "base/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 1
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: api
        image: example/api:1.0
""",
    "base/service.yaml": """\
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  selector: {app: api}
  ports:
  - port: 80
""",
    "overlays/prod/kustomization.yaml": """\
resources:
- ../../base
namePrefix: prod-
labels:
- pairs: {env: prod}
patches:
- path: replicas.yaml
images:
- name: example/api
  newTag: "2.0"
""",
    "overlays/prod/replicas.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 5
""",
}


def test_kustomize_builds_an_overlay_over_a_base(tmp_path: Path) -> None:
    tree = write(tmp_path / "app", KUSTOMIZE_TREE)
    objects = build(tree / "overlays" / "prod")

    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == [
        ("Deployment", "prod-api"),
        ("Service", "prod-api"),
    ]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 5
    assert deployment["metadata"]["labels"] == {"env": "prod"}
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "example/api:2.0"


def test_a_broken_kustomization_names_the_directory_and_kustomizes_message(
    tmp_path: Path,
) -> None:
    tree = write(tmp_path / "app", KUSTOMIZE_TREE)
    overlay = tree / "overlays" / "prod"
    (overlay / "kustomization.yaml").write_text("resources:\n- ../../base\n- missing.yaml\n")

    with pytest.raises(KustomizeError) as caught:
        build(overlay)
    assert "missing.yaml" in str(caught.value)
    assert caught.value.file == str(overlay)


def test_a_directory_without_kustomization_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KustomizeError, match="kustomization"):
        build(tmp_path)


def test_kustomize_may_not_read_outside_its_tree(tmp_path: Path) -> None:
    write(tmp_path, {"secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n"})
    tree = write(tmp_path / "app", {"kustomization.yaml": "resources:\n- ../secret.yaml\n"})
    with pytest.raises(KustomizeError, match="is not in or below"):
        build(tree)


# -- Fleet's own examples --------------------------------------------------------------------

FLEET_EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared/conformance/fleet-examples"
needs_examples = pytest.mark.skipif(
    not FLEET_EXAMPLES.is_dir(), reason="shared/conformance/fleet-examples is not there"
)
FLEET_BOOKKEEPING = (
    ("labels", "objectset.rio.cattle.io/hash"),
    ("annotations", "objectset.rio.cattle.io/id"),
)


def comparable(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """The conformance rule: keyed by (apiVersion, kind, namespace, name), bookkeeping dropped."""
    out = {}
    for original in objects:
        obj = copy.deepcopy(original)
        meta = obj["metadata"]
        for field, key in FLEET_BOOKKEEPING:
            if isinstance(meta.get(field), dict):
                meta[field].pop(key, None)
                if not meta[field]:
                    del meta[field]
        out[(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
    return out


def expected(case: str) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    text = (FLEET_EXAMPLES / "tests/expected" / case / "dev-output.yaml").read_text()
    return comparable([doc for doc in yaml.safe_load_all(text) if doc])


def fleet_yaml(case: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((FLEET_EXAMPLES / case / "fleet.yaml").read_text())
    return loaded


@needs_examples
def test_fleet_example_helm_renders_what_fleet_renders() -> None:
    spec = fleet_yaml("single-cluster/helm")
    helm = spec["helm"]
    options = DeploymentOptions(namespace=spec["namespace"])

    rendered = render_chart(
        FLEET_EXAMPLES / "single-cluster/helm" / helm["chart"],
        release_name=helm["releaseName"],
        namespace=spec["namespace"],
        values=helm["values"],
    )

    assert comparable(list(place(rendered.objects, options))) == expected("single-cluster/helm")


@needs_examples
def test_fleet_example_kustomize_builds_what_fleet_builds() -> None:
    spec = fleet_yaml("single-cluster/kustomize")
    options = DeploymentOptions(namespace=spec["namespace"])

    objects = build(FLEET_EXAMPLES / "single-cluster/kustomize" / spec["kustomize"]["dir"])
    parsed = [ParsedObject("kustomize", i, obj) for i, obj in enumerate(objects, start=1)]

    assert comparable(list(place(parsed, options))) == expected("single-cluster/kustomize")
