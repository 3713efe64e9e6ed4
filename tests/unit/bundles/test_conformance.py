"""The bundle format against Rancher Fleet's own examples and outputs.

``../shared/conformance/fleet-examples`` (beside the repository) holds
directories as Fleet users lay them out and the objects ``fleet test`` renders
for clusters labelled ``env=dev|test|prod``. Every ``fleet.yaml`` there must
load without error or warning, every example directory must discover as Fleet
scans it, and for raw-manifest examples the customizations and overlays must
give exactly Fleet's objects. Skipped when the corpus is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bundles.discovery import discover
from bundles.fleetyaml import load_fleet_yaml
from bundles.overlays import apply_overlays, raw_manifests
from protocol.manifests import parse_resources
from protocol.models import ClusterGroup

CORPUS = Path(__file__).resolve().parents[3] / ".." / "shared" / "conformance" / "fleet-examples"
EXPECTED = CORPUS / "tests" / "expected"
FLEET_BOOKKEEPING = {
    "labels": "objectset.rio.cattle.io/hash",
    "annotations": "objectset.rio.cattle.io/id",
}
NO_GROUPS: dict[str, ClusterGroup] = {}

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="conformance corpus not present")


def fleet_yamls() -> list[Path]:
    return sorted(CORPUS.rglob("fleet.yaml")) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", fleet_yamls(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_fleet_yaml_loads_without_errors_or_warnings(path: Path) -> None:
    fleet, warnings = load_fleet_yaml(path.read_text(), str(path.relative_to(CORPUS)))

    assert warnings == []
    assert fleet.file.endswith("fleet.yaml")


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("simple", {".": "manifests"}),
        ("single-cluster/manifests", {".": "manifests"}),
        ("single-cluster/helm", {".": "helm"}),
        ("single-cluster/kustomize", {".": "kustomize"}),
        ("multi-cluster/manifests", {".": "manifests"}),
        ("multi-cluster/helm", {".": "helm"}),
        (
            "single-cluster/helm-multi-chart",
            {"guestbook": "helm", "rancher-monitoring": "helm", "rancher-monitoring-crd": "helm"},
        ),
    ],
)
def test_example_directories_discover_as_fleet_scans_them(
    example: str, expected: dict[str, str]
) -> None:
    bundles = discover(CORPUS / example, base_name="test")

    assert {b.path: b.style.kind for b in bundles} == expected
    assert all(not b.warnings for b in bundles)
    for bundle in bundles:
        assert "fleet.yaml" not in [r.name for r in bundle.resources]
    remote = {b.path for b in bundles if b.style.remote_chart}
    assert remote == (
        {"rancher-monitoring", "rancher-monitoring-crd"} if "multi-chart" in example else set()
    )


def key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def without_bookkeeping(obj: dict[str, Any]) -> dict[str, Any]:
    meta = dict(obj["metadata"])
    for field, name in FLEET_BOOKKEEPING.items():
        if field in meta:
            rest = {k: v for k, v in meta[field].items() if k != name}
            if rest:
                meta[field] = rest
            else:
                del meta[field]
    return {**obj, "metadata": meta}


@pytest.mark.parametrize("env", ["dev", "test", "prod"])
@pytest.mark.parametrize("case", ["single-cluster/manifests", "multi-cluster/manifests"])
def test_raw_manifest_examples_render_fleets_objects(case: str, env: str) -> None:
    [bundle] = discover(CORPUS / case, base_name="test")
    options = bundle.spec().resolve(cluster_name="c1", labels={"env": env}, groups=NO_GROUPS)
    assert options is not None

    overlays = options.yaml.overlays if options.yaml else ()
    files = raw_manifests(apply_overlays(bundle.resources, overlays))
    ours = {}
    for parsed in parse_resources(files):
        obj = parsed.obj
        obj["metadata"]["namespace"] = options.namespace  # every object here is namespaced
        ours[key(obj)] = obj

    expected_text = (EXPECTED / case / f"{env}-output.yaml").read_text()
    theirs = {
        key(obj): without_bookkeeping(obj)
        for obj in yaml.safe_load_all(expected_text)
        if obj is not None
    }
    assert ours == theirs
