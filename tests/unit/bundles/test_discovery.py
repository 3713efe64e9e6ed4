"""Finding bundles in a repository tree, as Fleet scans a GitRepo.

The operator sees which bundles a directory becomes, under which names, with
which files, and how each deploys (chart, kustomize, manifests); files they
hid or listed in ``.fleetignore`` never reach a cluster.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from bundles.discovery import (
    MAX_BUNDLE_BYTES,
    BundleStyle,
    DiscoveredBundle,
    determine_style,
    discover,
    helm_release_name,
)
from bundles.errors import DiscoveryError, FleetYamlError
from protocol.models import DeploymentOptions

DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def by_path(bundles: list[DiscoveredBundle]) -> dict[str, DiscoveredBundle]:
    return {b.path: b for b in bundles}


def names(bundle: DiscoveredBundle) -> list[str]:
    return [r.name for r in bundle.resources]


def test_a_plain_directory_of_manifests_is_one_bundle(tmp_path: Path) -> None:
    root = write(tmp_path / "simple", {"web.yaml": DEPLOYMENT, "db/db.yml": DEPLOYMENT})

    [bundle] = discover(root)

    assert bundle.path == "."
    assert bundle.name == "simple"
    assert bundle.fleet is None
    assert names(bundle) == ["db/db.yml", "web.yaml"]
    assert bundle.style == BundleStyle("manifests")


def test_each_fleet_yaml_directory_is_a_bundle_and_its_files_are_its_own(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "app.yaml": DEPLOYMENT,
            "infra/fleet.yaml": "namespace: infra\n",
            "infra/cm.yaml": DEPLOYMENT,
            "infra/monitoring/fleet.yml": "namespace: mon\n",
            "infra/monitoring/mon.yaml": DEPLOYMENT,
            "infra/plain/extra.yaml": DEPLOYMENT,
        },
    )

    bundles = by_path(discover(root, base_name="repo"))

    assert sorted(bundles) == [".", "infra", "infra/monitoring"]
    assert names(bundles["."]) == ["app.yaml"]
    assert names(bundles["infra"]) == ["cm.yaml", "plain/extra.yaml"]
    assert names(bundles["infra/monitoring"]) == ["mon.yaml"]
    assert bundles["infra/monitoring"].fleet is not None
    assert bundles["infra/monitoring"].spec().options.namespace == "mon"
    assert [b.name for b in bundles.values()] == ["repo", "repo-infra", "repo-infra-monitoring"]


def test_a_root_without_yaml_of_its_own_is_not_a_bundle(tmp_path: Path) -> None:
    root = write(tmp_path, {"README.md": "hi", "app/fleet.yaml": "", "app/a.yaml": DEPLOYMENT})

    assert [b.path for b in discover(root)] == ["app"]


def test_paths_restrict_the_scan_and_may_be_globs(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "top.yaml": DEPLOYMENT,
            "envs/dev/a.yaml": DEPLOYMENT,
            "envs/prod/b.yaml": DEPLOYMENT,
            "other/c.yaml": DEPLOYMENT,
        },
    )

    bundles = discover(root, paths=["/envs/*"], base_name="r")

    assert [(b.path, b.name) for b in bundles] == [
        ("envs/dev", "r-envs-dev"),
        ("envs/prod", "r-envs-prod"),
    ]


def test_a_path_that_matches_nothing_or_leaves_the_root_is_an_error(tmp_path: Path) -> None:
    root = write(tmp_path, {"a.yaml": DEPLOYMENT})

    with pytest.raises(DiscoveryError, match="matches no directory"):
        discover(root, paths=["missing"])
    with pytest.raises(DiscoveryError, match="leaves"):
        discover(root, paths=["../elsewhere"])


def test_hidden_files_and_directories_are_skipped(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "a.yaml": DEPLOYMENT,
            ".hidden.yaml": DEPLOYMENT,
            ".github/workflows/ci.yml": "on: push\n",
            ".secret/fleet.yaml": "",
        },
    )

    [bundle] = discover(root)

    assert names(bundle) == ["a.yaml"]


def test_fleetignore_patterns_apply_to_their_directory_and_below(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            ".fleetignore": "# comment\n*.md\nscratch/*\nbuild/\n",
            "a.yaml": DEPLOYMENT,
            "NOTES.md": "x",
            "scratch/s.yaml": DEPLOYMENT,
            "build/b.yaml": DEPLOYMENT,
            "sub/.fleetignore": "local-*.yaml\n",
            "sub/local-test.yaml": DEPLOYMENT,
            "sub/keep.yaml": DEPLOYMENT,
            "sub/deep/DOC.md": "x",
            "local-top.yaml": DEPLOYMENT,
        },
    )

    [bundle] = discover(root)

    # sub/.fleetignore does not reach up: local-top.yaml stays.
    assert names(bundle) == ["a.yaml", "local-top.yaml", "sub/keep.yaml"]


def test_fleet_yaml_and_values_files_are_options_not_resources(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "fleet.yaml": (
                "helm:\n  values: {replicas: 1, image: {repo: web, tag: '1'}}\n"
                "  valuesFiles: [values-prod.yaml]\n"
                "targetCustomizations:\n- name: eu\n  clusterSelector: {}\n"
                "  helm: {valuesFiles: [eu.yaml]}\n"
            ),
            "Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
            "templates/d.yaml": DEPLOYMENT,
            "values-prod.yaml": "image: {tag: '2'}\n",
            "eu.yaml": "region: eu\n",
        },
    )

    [bundle] = discover(root)

    assert names(bundle) == ["Chart.yaml", "templates/d.yaml"]
    assert bundle.fleet is not None and bundle.fleet.helm is not None
    assert bundle.fleet.helm.values == {"replicas": 1, "image": {"repo": "web", "tag": "2"}}
    assert bundle.fleet.target_customizations[0].helm is not None
    assert bundle.fleet.target_customizations[0].helm.values == {"region": "eu"}
    assert bundle.style == BundleStyle("helm", chart_dir=".")


def test_a_missing_values_file_names_the_fleet_yaml_and_field(tmp_path: Path) -> None:
    root = write(tmp_path, {"app/fleet.yaml": "helm: {valuesFiles: [nope.yaml]}\n"})

    with pytest.raises(DiscoveryError) as info:
        discover(root)

    assert str(info.value).startswith("app/fleet.yaml: helm.valuesFiles: no file 'nope.yaml'")


def test_binary_files_travel_as_base64(tmp_path: Path) -> None:
    archive = b"\x1f\x8b\x08\x00\xff\xfe"
    root = write(
        tmp_path,
        {"fleet.yaml": "helm: {chart: charts/web-1.0.0.tgz}\n", "charts/web-1.0.0.tgz": archive},
    )

    [bundle] = discover(root)

    [chart] = bundle.resources
    assert chart.encoding == "base64"
    assert base64.b64decode(chart.content) == archive
    assert chart.data() == archive
    assert bundle.style == BundleStyle("helm", chart_archive="charts/web-1.0.0.tgz")


def test_fleet_yaml_warnings_name_the_file_relative_to_the_root(tmp_path: Path) -> None:
    root = write(tmp_path, {"single-cluster/helm/fleet.yaml": "helm: {valuesFile: x}\n"})

    [bundle] = discover(root)

    assert bundle.warnings == ("single-cluster/helm/fleet.yaml: unknown key helm.valuesFile",)


def test_fleet_yaml_errors_name_the_file(tmp_path: Path) -> None:
    root = write(tmp_path, {"app/fleet.yaml": "namespace: [\n"})

    with pytest.raises(FleetYamlError, match=r"^app/fleet.yaml \(line"):
        discover(root)


def test_the_name_in_fleet_yaml_wins_and_must_be_valid(tmp_path: Path) -> None:
    root = write(tmp_path, {"a/fleet.yaml": "name: shop-web\n", "a/x.yaml": DEPLOYMENT})
    assert [b.name for b in discover(root)] == ["shop-web"]

    write(tmp_path, {"a/fleet.yaml": "name: Shop_Web\n"})
    with pytest.raises(FleetYamlError, match="invalid bundle name"):
        discover(root)


def test_two_bundles_with_one_name_are_refused(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {"a/fleet.yaml": "name: same\n", "b/fleet.yaml": "name: same\n"},
    )

    with pytest.raises(DiscoveryError, match="both named 'same'"):
        discover(root)


def test_a_bundle_over_the_size_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bundles.discovery.MAX_BUNDLE_BYTES", 100)
    root = write(tmp_path, {"big/fleet.yaml": "", "big/a.yaml": "x" * 101})

    with pytest.raises(DiscoveryError, match=r"^big: bundle exceeds"):
        discover(root)
    assert MAX_BUNDLE_BYTES == 64 * 1024 * 1024


def test_an_empty_tree_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="no bundle found"):
        discover(write(tmp_path, {"README.md": "x"}))


# --- style ---------------------------------------------------------------------------


def style(names: list[str], **options: object) -> BundleStyle:
    return determine_style(names, DeploymentOptions.model_validate(options))


def test_style_follows_fleet() -> None:
    assert style(["Chart.yaml", "kustomization.yaml"]) == BundleStyle("helm", chart_dir=".")
    assert style(["chart/Chart.yaml"], helm={"chart": "./chart"}) == BundleStyle(
        "helm", chart_dir="chart"
    )
    assert style([], helm={"chart": "oci://ghcr.io/x/web"}) == BundleStyle(
        "helm", remote_chart=True
    )
    assert style(["Chart.yaml"], helm={"repo": "https://charts.example.com", "chart": "web"}) == (
        BundleStyle("helm", remote_chart=True)
    )
    assert style(["kustomization.yaml", "a.yaml"]) == BundleStyle("kustomize", kustomize_dir=".")
    assert style(["overlays/prod/kustomization.yaml"], kustomize={"dir": "overlays/prod"}) == (
        BundleStyle("kustomize", kustomize_dir="overlays/prod")
    )
    assert style(["chart/Chart.yaml", "a.yaml"]) == BundleStyle("manifests")


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("test", "test"),
        ("repo/single-cluster/helm", "repo-single-cluster-helm"),
        # Capitals or characters a DNS label cannot hold get a hash, so names stay distinct.
        ("bundle.name.example.com", "bundle-name-example-com-645ef821"),
        ("long-name-test-shortpath-with@char", "long-name-test-shortpath-with-char-031bab5e"),
        ("long-name-test-0.App_ ", "long-name-test-0-app-5bf6b3fb"),
        # Over 53 characters: cut, and a short hash keeps it unique.
        ("1234567890" * 5 + "123a", "12345678901234567890123456789012345678901234567-fdba4"),
        (
            "1234567890" * 4 + "123456-1234567",
            "1234567890123456789012345678901234567890123456-d0bce",
        ),
    ],
)
def test_bundle_names_are_derived_as_fleet_derives_them(path: str, name: str) -> None:
    assert helm_release_name(path) == name


def test_links_to_files_outside_the_tree_are_left_out(tmp_path: Path) -> None:
    outside = write(tmp_path / "outside", {"secret.yaml": "password: x\n"})
    root = write(tmp_path / "repo", {"a.yaml": DEPLOYMENT, "shared/b.yaml": DEPLOYMENT})
    (root / "leak.yaml").symlink_to(outside / "secret.yaml")
    (root / "alias.yaml").symlink_to(root / "shared" / "b.yaml")
    (root / "linked-dir").symlink_to(outside, target_is_directory=True)

    [bundle] = discover(root)

    assert names(bundle) == ["a.yaml", "alias.yaml", "shared/b.yaml"]
