"""Drift between what shoal applied and the live object.

``APPLIED`` is a manifest as a bundle carries it; ``LIVE`` is the same object
as ``kubectl get -o yaml`` shows it after a server-side apply: server defaults
filled in, quantities canonicalised, fields of other managers and status added.
The first test pins the point of the module: that object is not Modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from edgeagent.kube.drift import DELETED, differences, parse_quantity
from protocol.models import ComparePatch

pytestmark = pytest.mark.kube

Obj = dict[str, Any]

APPLIED: Obj = yaml.safe_load(
    """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
    app.kubernetes.io/name: shop-web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: ghcr.io/acme/shop-web:1.4.2
        args: ["--listen=:8080", "--log-format=json"]
        ports:
        - containerPort: 8080
        env:
        - name: LOG_LEVEL
          value: info
        - name: FEATURE_CHECKOUT
          value: "true"
        resources:
          requests:
            cpu: "0.5"
            memory: 1024Mi
          limits:
            cpu: 1
            memory: 1Gi
            ephemeral-storage: 2e9
        volumeMounts:
        - name: cache
          mountPath: /var/cache/web
      volumes:
      - name: cache
        emptyDir: {}
      hostNetwork: false
"""
)

LIVE: Obj = yaml.safe_load(
    """
apiVersion: apps/v1
kind: Deployment
metadata:
  annotations:
    deployment.kubernetes.io/revision: "2"
  creationTimestamp: "2024-05-02T09:14:03Z"
  generation: 2
  labels:
    app: web
    app.kubernetes.io/name: shop-web
    objectset.rio.cattle.io/hash: 3d4a1c0b
  managedFields:
  - apiVersion: apps/v1
    fieldsType: FieldsV1
    fieldsV1:
      f:spec:
        f:replicas: {}
    manager: shoal
    operation: Apply
    time: "2024-05-02T09:14:03Z"
  - apiVersion: apps/v1
    fieldsType: FieldsV1
    fieldsV1:
      f:status:
        f:availableReplicas: {}
    manager: kube-controller-manager
    operation: Update
    subresource: status
    time: "2024-05-02T09:14:09Z"
  name: web
  namespace: shop
  resourceVersion: "88121"
  uid: 5c1d8f0e-8a43-4b0e-9d7e-0d2b1d6f3a11
spec:
  progressDeadlineSeconds: 600
  replicas: 3
  revisionHistoryLimit: 10
  selector:
    matchLabels:
      app: web
  strategy:
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 25%
    type: RollingUpdate
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: web
    spec:
      containers:
      - args:
        - --listen=:8080
        - --log-format=json
        env:
        - name: LOG_LEVEL
          value: info
        - name: FEATURE_CHECKOUT
          value: "true"
        image: ghcr.io/acme/shop-web:1.4.2
        imagePullPolicy: IfNotPresent
        name: web
        ports:
        - containerPort: 8080
          protocol: TCP
        resources:
          limits:
            cpu: "1"
            ephemeral-storage: 2G
            memory: 1Gi
          requests:
            cpu: 500m
            memory: 1Gi
        terminationMessagePath: /dev/termination-log
        terminationMessagePolicy: File
        volumeMounts:
        - mountPath: /var/cache/web
          name: cache
      dnsPolicy: ClusterFirst
      restartPolicy: Always
      schedulerName: default-scheduler
      securityContext: {}
      terminationGracePeriodSeconds: 30
      volumes:
      - emptyDir: {}
        name: cache
status:
  availableReplicas: 3
  conditions:
  - lastTransitionTime: "2024-05-02T09:14:09Z"
    message: Deployment has minimum availability.
    reason: MinimumReplicasAvailable
    status: "True"
    type: Available
  observedGeneration: 2
  readyReplicas: 3
  replicas: 3
  updatedReplicas: 3
"""
)

WEB = "spec.template.spec.containers[name=web]"


def edited(change: Callable[[Obj], object]) -> Obj:
    """The live object after someone ran ``kubectl edit`` on it."""
    live = copy.deepcopy(LIVE)
    change(live)
    return live


def container(obj: Obj) -> Obj:
    web: Obj = obj["spec"]["template"]["spec"]["containers"][0]
    return web


def scaled(live: Obj) -> None:
    live["spec"]["replicas"] = 7


def patch(**fields: Any) -> ComparePatch:
    """A compare patch as written under ``diff.comparePatches`` in fleet.yaml."""
    return ComparePatch.model_validate(fields)


class TestUnmodified:
    def test_server_defaults_and_canonical_forms_are_not_drift(self) -> None:
        assert differences(APPLIED, LIVE) == []

    def test_other_managers_fields_and_labels_are_not_drift(self) -> None:
        def annotate(live: Obj) -> None:
            live["metadata"]["labels"]["team"] = "payments"
            live["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "2024-05-03"
            live["spec"]["template"]["metadata"]["annotations"] = {"linkerd.io/inject": "on"}

        assert differences(APPLIED, edited(annotate)) == []

    def test_injected_sidecar_is_not_drift(self) -> None:
        sidecar = {"name": "linkerd-proxy", "image": "cr.l5d.io/linkerd/proxy:stable-2.14"}
        live = edited(lambda o: o["spec"]["template"]["spec"]["containers"].insert(0, sidecar))
        assert differences(APPLIED, live) == []

    def test_caller_dicts_are_not_modified(self) -> None:
        applied, live = copy.deepcopy(APPLIED), edited(lambda o: o["spec"].update(replicas=5))
        before = copy.deepcopy((applied, live))
        patches = [
            patch(
                kind="Deployment",
                operations=[{"op": "remove", "path": "/spec/replicas"}],
                jsonPointers=["/metadata/labels"],
            )
        ]
        assert differences(applied, live, compare_patches=patches) == []
        assert (applied, live) == before


class TestModified:
    def test_deleted(self) -> None:
        assert differences(APPLIED, None) == [DELETED] == ["(object deleted)"]

    def test_image_edited(self) -> None:
        live = edited(lambda o: container(o).update(image="ghcr.io/acme/shop-web:1.4.3-hotfix"))
        assert differences(APPLIED, live) == [f"{WEB}.image"]

    def test_scaled(self) -> None:
        live = edited(lambda o: o["spec"].update(replicas=5))
        assert differences(APPLIED, live) == ["spec.replicas"]

    def test_label_removed(self) -> None:
        def unlabel(live: Obj) -> None:
            del live["metadata"]["labels"]["app"]
            del live["metadata"]["labels"]["app.kubernetes.io/name"]

        assert differences(APPLIED, edited(unlabel)) == [
            "metadata.labels.app",
            'metadata.labels["app.kubernetes.io/name"]',
        ]

    def test_all_labels_removed_reports_each_label(self) -> None:
        live = edited(lambda o: o["metadata"].pop("labels"))
        assert differences(APPLIED, live) == [
            "metadata.labels.app",
            'metadata.labels["app.kubernetes.io/name"]',
        ]

    def test_env_value_edited(self) -> None:
        live = edited(lambda o: container(o)["env"][0].update(value="debug"))
        assert differences(APPLIED, live) == [f"{WEB}.env[name=LOG_LEVEL].value"]

    def test_env_var_removed(self) -> None:
        live = edited(lambda o: container(o)["env"].pop(1))
        assert differences(APPLIED, live) == [f"{WEB}.env[name=FEATURE_CHECKOUT]"]

    def test_container_removed(self) -> None:
        sidecar = {"name": "debug", "image": "busybox:1.36"}
        live = edited(lambda o: o["spec"]["template"]["spec"].update(containers=[sidecar]))
        assert differences(APPLIED, live) == [WEB]

    def test_cpu_limit_changed(self) -> None:
        live = edited(lambda o: container(o)["resources"]["limits"].update(cpu="1500m"))
        assert differences(APPLIED, live) == [f"{WEB}.resources.limits.cpu"]

    def test_port_changed(self) -> None:
        live = edited(lambda o: container(o)["ports"][0].update(containerPort=9090))
        assert differences(APPLIED, live) == [f"{WEB}.ports[containerPort=8080]"]

    def test_args_reordered(self) -> None:
        live = edited(lambda o: container(o)["args"].reverse())
        assert differences(APPLIED, live) == [f"{WEB}.args"]

    def test_zero_value_set_by_someone_else(self) -> None:
        live = edited(lambda o: o["spec"]["template"]["spec"].update(hostNetwork=True))
        assert differences(APPLIED, live) == ["spec.template.spec.hostNetwork"]

    def test_several_edits_in_a_stable_order(self) -> None:
        def edit(live: Obj) -> None:
            live["spec"]["replicas"] = 1
            container(live)["image"] = "nginx"
            del live["metadata"]["labels"]["app"]

        expected = ["metadata.labels.app", "spec.replicas", f"{WEB}.image"]
        assert differences(APPLIED, edited(edit)) == expected
        reordered = dict(reversed(list(APPLIED.items())))
        assert differences(reordered, edited(edit)) == expected


class TestServices:
    APPLIED: Obj = yaml.safe_load(
        """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - port: "80"
    targetPort: "8080"
"""
    )
    LIVE: Obj = yaml.safe_load(
        """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, resourceVersion: "4411", uid: 0b9d}
spec:
  clusterIP: 10.43.12.7
  clusterIPs: [10.43.12.7]
  internalTrafficPolicy: Cluster
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  ports:
  - port: 80
    protocol: TCP
    targetPort: 8080
  selector: {app: web}
  sessionAffinity: None
  type: ClusterIP
status:
  loadBalancer: {}
"""
    )

    def test_ports_as_strings_are_not_drift(self) -> None:
        assert differences(self.APPLIED, self.LIVE) == []

    def test_target_port_changed(self) -> None:
        live = copy.deepcopy(self.LIVE)
        live["spec"]["ports"][0]["targetPort"] = "http"
        assert differences(self.APPLIED, live) == ["spec.ports[port=80].targetPort"]


def test_tolerations_added_by_admission_are_not_drift() -> None:
    toleration = {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}
    applied: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "shop"},
        "spec": {"tolerations": [toleration]},
    }
    added = {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }
    live = copy.deepcopy(applied)
    live["spec"]["tolerations"] = [added, toleration]
    assert differences(applied, live) == []
    live["spec"]["tolerations"] = [added, {**toleration, "value": "core"}]
    assert differences(applied, live) == ["spec.tolerations[0]"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        (1, Decimal(1)),
        ("1Gi", Decimal(1024**3)),
        ("1024Mi", Decimal(1024**3)),
        ("1e3", Decimal(1000)),
        ("1E", Decimal(10**18)),
        ("128974848", Decimal(128974848)),
        ("129M", Decimal(129_000_000)),
        ("100n", Decimal("1e-7")),
        ("1.5Ki", Decimal(1536)),
    ],
)
def test_parse_quantity(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "1 Gi", "1GB", "one", "1.2.3", None, True])
def test_parse_quantity_rejects(text: Any) -> None:
    assert parse_quantity(text) is None


@pytest.mark.parametrize(
    ("applied", "live", "drift"),
    [
        ("0.5", "500m", False),
        ("1", "1000m", False),
        (2, "2", False),
        ("1Gi", "1024Mi", False),
        ("1Gi", "1G", True),
        ("250m", "0.5", True),
    ],
)
def test_quantities_compare_by_value(applied: Any, live: Any, drift: bool) -> None:
    claim: Obj = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "shop"},
        "spec": {"resources": {"requests": {"storage": applied}}},
    }
    served = copy.deepcopy(claim)
    served["spec"]["resources"]["requests"]["storage"] = live
    expected = ["spec.resources.requests.storage"] if drift else []
    assert differences(claim, served) == expected


class TestComparePatches:
    def test_hpa_managed_replicas_are_ignored(self) -> None:
        # Fleet's documented example: an HPA owns spec.replicas.
        hpa = patch(
            apiVersion="apps/v1",
            kind="Deployment",
            name="web",
            namespace="shop",
            operations=[{"op": "remove", "path": "/spec/replicas"}],
        )
        assert differences(APPLIED, edited(scaled), compare_patches=[hpa]) == []

    def test_other_edits_are_still_caught(self) -> None:
        hpa = patch(kind="Deployment", operations=[{"op": "remove", "path": "/spec/replicas"}])

        def edit(live: Obj) -> None:
            live["spec"]["replicas"] = 7
            container(live)["image"] = "nginx"

        assert differences(APPLIED, edited(edit), compare_patches=[hpa]) == [f"{WEB}.image"]

    @pytest.mark.parametrize(
        "selector",
        [
            {"name": "api"},
            {"namespace": "default"},
            {"kind": "StatefulSet"},
            {"apiVersion": "apps/v1beta2"},
        ],
    )
    def test_patch_for_another_object_does_not_apply(self, selector: dict[str, str]) -> None:
        other = patch(**selector, operations=[{"op": "remove", "path": "/spec/replicas"}])
        assert differences(APPLIED, edited(scaled), compare_patches=[other]) == ["spec.replicas"]

    def test_json_pointers_are_left_out(self) -> None:
        pointers = patch(
            kind="Deployment",
            name="web",
            jsonPointers=[
                "/metadata/labels/app.kubernetes.io~1name",
                "/spec/template/spec/containers/0/image",
            ],
        )

        def edit(live: Obj) -> None:
            del live["metadata"]["labels"]["app.kubernetes.io/name"]
            container(live)["image"] = "nginx"
            container(live)["env"][0]["value"] = "debug"

        assert differences(APPLIED, edited(edit), compare_patches=[pointers]) == [
            f"{WEB}.env[name=LOG_LEVEL].value"
        ]

    def test_remove_of_absent_path_is_not_an_error(self) -> None:
        absent = patch(
            kind="Deployment",
            operations=[
                {"op": "remove", "path": "/spec/paused"},
                {"op": "remove", "path": "/spec/template/spec/containers/5"},
                {"op": "remove", "path": "/spec/replicas"},
            ],
        )
        assert differences(APPLIED, edited(scaled), compare_patches=[absent]) == []

    def test_replace_sets_both_sides(self) -> None:
        pin = patch(
            kind="Deployment", operations=[{"op": "replace", "path": "/spec/replicas", "value": 1}]
        )
        assert differences(APPLIED, edited(scaled), compare_patches=[pin]) == []

    def test_add_sets_both_sides(self) -> None:
        add = patch(
            kind="Deployment",
            operations=[{"op": "add", "path": "/metadata/labels/app", "value": "web"}],
        )
        live = edited(lambda o: o["metadata"]["labels"].pop("app"))
        assert differences(APPLIED, live, compare_patches=[add]) == []

    def test_failed_test_operation_skips_the_patch(self) -> None:
        def guarded(app: str) -> ComparePatch:
            return patch(
                kind="Deployment",
                operations=[
                    {"op": "test", "path": "/spec/selector/matchLabels/app", "value": app},
                    {"op": "remove", "path": "/spec/replicas"},
                ],
            )

        live = edited(scaled)
        assert differences(APPLIED, live, compare_patches=[guarded("web")]) == []
        assert differences(APPLIED, live, compare_patches=[guarded("api")]) == ["spec.replicas"]


# -- properties ---------------------------------------------------------------

_keys = st.text(alphabet="abcxyz", min_size=1, max_size=4)
_scalars = st.one_of(
    st.text(alphabet="abc019-.", min_size=1, max_size=6),
    st.integers(min_value=-1000, max_value=1000),
    st.booleans(),
)
_documents = st.recursive(
    st.dictionaries(_keys, _scalars, max_size=4),
    lambda children: st.dictionaries(
        _keys,
        st.one_of(
            _scalars,
            children,
            st.lists(_scalars, max_size=3),
            st.lists(children, max_size=3),
        ),
        max_size=4,
    ),
    max_leaves=25,
)


def _leaves(doc: Obj, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            found.extend(_leaves(value, (*path, key)))
        elif not isinstance(value, list):
            found.append((*path, key))
    return found


def _mutated(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return f"{value}-edited"


@given(_documents)
def test_an_object_never_drifts_from_itself(doc: Obj) -> None:
    assert differences(doc, copy.deepcopy(doc)) == []


@given(_documents, _documents)
def test_fields_only_in_live_are_never_drift(doc: Obj, extra: Obj) -> None:
    def merge(base: Obj, more: Obj) -> Obj:
        merged = dict(more)
        for key, value in base.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge(value, merged[key])
            else:
                merged[key] = value
        return merged

    assert differences(doc, merge(doc, extra)) == []


@given(_documents, st.data())
def test_an_edited_leaf_is_reported_at_its_path(doc: Obj, data: st.DataObject) -> None:
    leaves = _leaves(doc)
    if not leaves:
        return
    path = data.draw(st.sampled_from(leaves))
    live = copy.deepcopy(doc)
    parent = live
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = _mutated(parent[path[-1]])
    assert differences(doc, live) == [".".join(path)]
