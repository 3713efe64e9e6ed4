"""``yaml.overlays``: replacing and patching raw manifests per target, as Fleet does.

The user sees the objects a cluster gets: a replaced file's content, a patched
Deployment with its container changed and the others kept, files under
``overlays/`` never deployed themselves, and a clear error naming the patch
file when a patch cannot apply.
"""

from __future__ import annotations

from textwrap import dedent
from typing import Any

import pytest
import yaml

from bundles.errors import OverlayError
from bundles.overlays import (
    apply_overlays,
    json_patch,
    merge_patch,
    patch_target,
    raw_manifests,
    strategic_merge,
)
from protocol.models import BundleResource

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  template:
    spec:
      containers:
      - name: web
        image: web:1
        env:
        - {name: MODE, value: normal}
        - {name: LOG, value: info}
        ports:
        - {containerPort: 80}
      - name: sidecar
        image: proxy:1
      volumes:
      - name: data
        emptyDir: {}
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  ports:
  - {port: 80, name: http}
  selector: {app: web, tier: frontend}
"""


def res(name: str, content: str) -> BundleResource:
    return BundleResource(name=name, content=dedent(content))


def bundle(**overlay_files: str) -> list[BundleResource]:
    files = [res("deployment.yaml", DEPLOYMENT), res("svc.yaml", SERVICE)]
    files += [res(name.replace("__", "/"), text) for name, text in overlay_files.items()]
    return files


def objects(resources: list[BundleResource]) -> dict[str, Any]:
    return {r.name: yaml.safe_load(r.content) for r in resources}


def test_no_overlays_leaves_the_files_and_drops_the_overlays_directory() -> None:
    out = apply_overlays(bundle(overlays__prod__svc_patch_yaml="spec: {type: LoadBalancer}"), [])

    assert [r.name for r in out] == ["deployment.yaml", "svc.yaml"]


def test_a_file_of_the_same_name_replaces_and_a_new_one_is_added() -> None:
    out = apply_overlays(
        [
            *bundle(),
            res("overlays/prod/svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\n"),
            res("overlays/prod/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"),
        ],
        ["prod"],
    )

    assert [r.name for r in out] == ["cm.yaml", "deployment.yaml", "svc.yaml"]
    assert objects(out)["svc.yaml"]["metadata"]["name"] == "lb"


def test_an_empty_replacement_removes_a_files_objects() -> None:
    # fleet-examples' noreplication overlay drops redis-slave-deployment.yaml this way.
    out = apply_overlays([*bundle(), res("overlays/dev/deployment.yaml", "")], ["dev"])

    assert objects(out)["deployment.yaml"] is None


def test_overlays_apply_in_order_and_paths_keep_their_directories() -> None:
    files = [
        res(
            "apps/web.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: '1'}\n",
        ),
        res("overlays/one/apps/web_patch.yaml", "data: {a: '2', b: '2'}\n"),
        res("overlays/two/apps/web_patch.yaml", "data: {a: '3'}\n"),
    ]

    out = apply_overlays(files, ["one", "two"])

    assert objects(out)["apps/web.yaml"]["data"] == {"a": "3", "b": "2"}


def test_strategic_merge_patches_a_container_by_name_and_keeps_the_others() -> None:
    patch = """\
    spec:
      replicas: 3
      template:
        spec:
          containers:
          - name: web
            image: web:2
            env:
            - {name: LOG, value: debug}
            - {name: NEW, value: "1"}
    """
    out = apply_overlays([*bundle(), res("overlays/prod/deployment_patch.yaml", patch)], ["prod"])

    spec = objects(out)["deployment.yaml"]["spec"]
    web, sidecar = spec["template"]["spec"]["containers"]
    assert spec["replicas"] == 3
    assert web["image"] == "web:2"
    assert web["env"] == [
        {"name": "MODE", "value": "normal"},
        {"name": "LOG", "value": "debug"},
        {"name": "NEW", "value": "1"},
    ]
    assert web["ports"] == [{"containerPort": 80}]
    assert sidecar == {"name": "sidecar", "image": "proxy:1"}


def test_strategic_merge_directives_delete_and_replace() -> None:
    target = yaml.safe_load(DEPLOYMENT)
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "sidecar", "$patch": "delete"}],
                    "volumes": [{"name": "cache", "emptyDir": {}}, {"$patch": "replace"}],
                }
            }
        },
        "metadata": {"labels": {"$patch": "replace", "only": "this"}},
    }

    result = strategic_merge(target, patch)

    pod = result["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["web"]
    assert pod["volumes"] == [{"name": "cache", "emptyDir": {}}]
    assert result["metadata"]["labels"] == {"only": "this"}


def test_service_ports_merge_on_port_and_maps_merge_key_by_key() -> None:
    out = apply_overlays(
        [
            *bundle(),
            res(
                "overlays/lb/svc_patch.yaml",
                "spec:\n  type: LoadBalancer\n  ports: [{port: 80, nodePort: 30080}]\n"
                "  selector: {tier: null, role: master}\n",
            ),
        ],
        ["lb"],
    )

    spec = objects(out)["svc.yaml"]["spec"]
    assert spec["type"] == "LoadBalancer"
    assert spec["ports"] == [{"port": 80, "name": "http", "nodePort": 30080}]
    assert spec["selector"] == {"app": "web", "role": "master"}


def test_custom_resources_get_a_json_merge_patch() -> None:
    crd_object = (
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
        "spec:\n  items: [{name: a, size: 1}]\n"
    )
    out = apply_overlays(
        [
            res("widget.yaml", crd_object),
            res("overlays/x/widget_patch.yaml", "spec:\n  items: [{name: a, size: 2}]\n"),
        ],
        ["x"],
    )

    # No strategic merge for unknown kinds: the list is replaced as a whole.
    assert objects(out)["widget.yaml"]["spec"]["items"] == [{"name": "a", "size": 2}]


def test_a_list_patch_is_a_json_patch() -> None:
    patch = """\
    - {op: replace, path: /spec/replicas, value: 5}
    - {op: add, path: /spec/template/spec/containers/-, value: {name: log, image: log:1}}
    - {op: remove, path: /spec/template/spec/volumes/0}
    - {op: add, path: /metadata/labels, value: {a~b/c: x}}
    """
    out = apply_overlays([*bundle(), res("overlays/p/deployment_patch.yaml", patch)], ["p"])

    deployment = objects(out)["deployment.yaml"]
    assert deployment["spec"]["replicas"] == 5
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [
        "web",
        "sidecar",
        "log",
    ]
    assert deployment["spec"]["template"]["spec"]["volumes"] == []
    assert deployment["metadata"]["labels"] == {"a~b/c": "x"}


def test_json_patch_pointers_move_copy_and_test() -> None:
    doc = {"a": {"b~c": 1, "d/e": [1, 2]}, "f": 0}
    ops = [
        {"op": "test", "path": "/a/b~0c", "value": 1},
        {"op": "copy", "from": "/a/d~1e/1", "path": "/g"},
        {"op": "move", "from": "/f", "path": "/a/f"},
    ]

    assert json_patch(doc, ops) == {"a": {"b~c": 1, "d/e": [1, 2], "f": 0}, "g": 2}
    assert doc == {"a": {"b~c": 1, "d/e": [1, 2]}, "f": 0}


def test_json_merge_patch_rfc_7386() -> None:
    assert merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}) == {
        "a": "z",
        "c": {"d": "e"},
    }
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_an_empty_patch_changes_nothing() -> None:
    out = apply_overlays([*bundle(), res("overlays/x/svc_patch.yaml", "{}\n")], ["x"])

    assert objects(out)["svc.yaml"] == yaml.safe_load(SERVICE)


def test_patch_file_names_map_to_their_target() -> None:
    assert patch_target("frontend-service_patch.yaml") == "frontend-service.yaml"
    assert patch_target("sub/app_patch.json") == "sub/app.json"
    assert patch_target("app.yaml") is None


@pytest.mark.parametrize(
    ("files", "overlays", "message"),
    [
        ({"overlays/x/missing_patch.yaml": "a: 1"}, ["x"], "no file missing.yaml to patch"),
        (
            {"overlays/x/deployment_patch.yaml": "- {op: remove, path: /spec/nothing}"},
            ["x"],
            "cannot patch deployment.yaml",
        ),
        ({"overlays/x/svc_patch.yaml": "spec: [unclosed"}, ["x"], "not valid YAML"),
        ({"overlays/x/svc_patch.yaml": "just text"}, ["x"], "a patch is a map or a list"),
        ({}, ["typo"], "no files under overlays/typo/"),
    ],
)
def test_bad_patches_raise_naming_the_overlay_file(
    files: dict[str, str], overlays: list[str], message: str
) -> None:
    resources = [*bundle(), *(res(name, text) for name, text in files.items())]

    with pytest.raises(OverlayError) as info:
        apply_overlays(resources, overlays)

    assert message in str(info.value)
    if files:
        assert info.value.file == next(iter(files))


def test_a_patch_target_with_several_documents_is_refused() -> None:
    resources = [
        res("two.yaml", "a: 1\n---\nb: 2\n"),
        res("overlays/x/two_patch.yaml", "a: 3\n"),
    ]

    with pytest.raises(OverlayError, match="holds 2 YAML documents"):
        apply_overlays(resources, ["x"])


def test_raw_manifests_are_the_yaml_and_json_files_fleet_deploys() -> None:
    names = [
        "fleet.yaml",
        "README.md",
        "deploy.yaml",
        "svc.yml",
        "cm.json",
        "overlays/x/deploy.yaml",
        "chart/Chart.yaml",
        "chart/templates/a.yaml",
        "other/fleet.yaml",
        "other/b.yaml",
        "sub/c.yaml",
    ]

    out = raw_manifests(res(name, "") for name in names)

    assert [r.name for r in out] == ["cm.json", "deploy.yaml", "sub/c.yaml", "svc.yml"]
