"""Bundle targets, as Fleet evaluates them, and the models' YAML/JSON spelling.

``BundleSpec.resolve`` decides which clusters get a bundle and with which
options; these tests pin Fleet's rules: targets in order, first match wins,
empty criteria dropped, a target with no criteria matches nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from protocol.errors import InvalidNameError
from protocol.models import (
    BundleSpec,
    BundleTarget,
    Cluster,
    ClusterGroup,
    DeploymentOptions,
    validate_bundle_name,
    validate_cluster_name,
)
from protocol.selectors import LabelSelector

NO_GROUPS: dict[str, ClusterGroup] = {}

GROUPS = {
    "edge": ClusterGroup.model_validate(
        {"name": "edge", "selector": {"matchLabels": {"tier": "edge"}}, "labels": {"region": "eu"}}
    ),
    "core": ClusterGroup.model_validate(
        {"name": "core", "selector": {"matchLabels": {"tier": "core"}}, "labels": {"region": "us"}}
    ),
}


def spec(*targets: dict[str, Any], options: dict[str, Any] | None = None) -> BundleSpec:
    return BundleSpec.model_validate(
        {"name": "web", "options": options or {}, "targets": list(targets)}
    )


def resolve(
    bundle: BundleSpec,
    labels: dict[str, str],
    *,
    name: str | None = "c1",
    groups: dict[str, ClusterGroup] = NO_GROUPS,
) -> DeploymentOptions | None:
    return bundle.resolve(cluster_name=name, labels=labels, groups=groups)


def deployed(bundle: BundleSpec, labels: dict[str, str], **kwargs: Any) -> bool:
    return resolve(bundle, labels, **kwargs) is not None


# --- which clusters ---------------------------------------------------------------------


def test_no_targets_means_no_clusters() -> None:
    assert not deployed(spec(), {"env": "prod"})


def test_targets_are_evaluated_in_order_and_the_first_match_wins() -> None:
    bundle = spec(
        {"clusterSelector": {"matchLabels": {"env": "prod"}}, "namespace": "prod-ns"},
        {"clusterSelector": {}, "namespace": "other-ns"},
        {"clusterSelector": {"matchLabels": {"env": "prod"}}, "namespace": "never"},
    )

    assert resolve(bundle, {"env": "prod"}) == DeploymentOptions(namespace="prod-ns")
    assert resolve(bundle, {"env": "dev"}) == DeploymentOptions(namespace="other-ns")


def test_do_not_deploy_excludes_clusters_a_later_target_would_take() -> None:
    bundle = spec(
        {
            "clusterSelector": {"matchExpressions": [{"key": "canary", "operator": "Exists"}]},
            "doNotDeploy": True,
        },
        {"clusterSelector": {}},
    )

    assert not deployed(bundle, {"canary": "true", "env": "prod"})
    assert deployed(bundle, {"env": "prod"})


def test_do_not_deploy_after_a_matching_target_changes_nothing() -> None:
    bundle = spec({"clusterSelector": {}}, {"clusterSelector": {}, "doNotDeploy": True})

    assert deployed(bundle, {})


def test_empty_cluster_selector_matches_every_cluster() -> None:
    bundle = spec({"clusterSelector": {}})

    assert deployed(bundle, {})
    assert deployed(bundle, {"env": "prod"}, name=None)


@pytest.mark.parametrize(
    "target",
    [
        {},
        {"name": "only-a-name", "namespace": "x"},
        {"clusterName": "", "clusterGroup": ""},
        {"clusterSelector": None, "clusterGroupSelector": None},
    ],
)
def test_target_without_criteria_matches_nothing(target: dict[str, Any]) -> None:
    bundle = spec(target)

    assert not BundleTarget.model_validate(target).has_criteria()
    assert not deployed(bundle, {})
    assert not deployed(bundle, {"env": "prod"}, groups=GROUPS)


def test_empty_criteria_are_dropped_and_the_others_still_apply() -> None:
    bundle = spec(
        {"clusterSelector": {"matchLabels": {"env": "prod"}}, "clusterName": "", "clusterGroup": ""}
    )

    assert deployed(bundle, {"env": "prod"}, name="any-cluster")
    assert not deployed(bundle, {"env": "dev"})


def test_every_given_criterion_must_match() -> None:
    bundle = spec({"clusterName": "c1", "clusterSelector": {"matchLabels": {"env": "prod"}}})

    assert deployed(bundle, {"env": "prod"}, name="c1")
    assert not deployed(bundle, {"env": "dev"}, name="c1")
    assert not deployed(bundle, {"env": "prod"}, name="c2")


def test_cluster_name_targets_one_cluster_only() -> None:
    bundle = spec({"clusterName": "c1"})

    assert deployed(bundle, {}, name="c1")
    assert not deployed(bundle, {}, name="c2")
    # A class that stands for no particular cluster is not the named cluster.
    assert not deployed(bundle, {}, name=None)
    assert bundle.names_targeted() == {"c1"}


def test_cluster_group_by_name_uses_the_group_selector() -> None:
    bundle = spec({"clusterGroup": "edge"})

    assert deployed(bundle, {"tier": "edge"}, groups=GROUPS)
    assert not deployed(bundle, {"tier": "core"}, groups=GROUPS)
    assert not deployed(bundle, {}, groups=GROUPS)


def test_cluster_group_that_does_not_exist_matches_nothing() -> None:
    bundle = spec({"clusterGroup": "missing"})

    assert not deployed(bundle, {"tier": "edge"}, groups=GROUPS)


def test_cluster_group_selector_selects_groups_by_their_own_labels() -> None:
    bundle = spec({"clusterGroupSelector": {"matchLabels": {"region": "eu"}}})

    # The edge group carries region=eu; its members are the tier=edge clusters.
    assert deployed(bundle, {"tier": "edge"}, groups=GROUPS)
    assert not deployed(bundle, {"tier": "core"}, groups=GROUPS)
    # The cluster's own region label is not what the selector reads.
    assert not deployed(bundle, {"region": "eu"}, groups=GROUPS)


def test_empty_cluster_group_selector_matches_members_of_any_group() -> None:
    bundle = spec({"clusterGroupSelector": {}})

    assert deployed(bundle, {"tier": "edge"}, groups=GROUPS)
    assert deployed(bundle, {"tier": "core"}, groups=GROUPS)
    assert not deployed(bundle, {"tier": "none"}, groups=GROUPS)
    assert not deployed(bundle, {"tier": "edge"}, groups=NO_GROUPS)


def test_cluster_group_combined_with_cluster_selector() -> None:
    bundle = spec({"clusterGroup": "edge", "clusterSelector": {"matchLabels": {"env": "prod"}}})

    assert deployed(bundle, {"tier": "edge", "env": "prod"}, groups=GROUPS)
    assert not deployed(bundle, {"tier": "edge", "env": "dev"}, groups=GROUPS)
    assert not deployed(bundle, {"tier": "core", "env": "prod"}, groups=GROUPS)


def test_selectors_a_target_reads_include_group_selectors() -> None:
    by_name = BundleTarget.model_validate({"clusterGroup": "edge", "clusterSelector": {}})
    by_selector = BundleTarget.model_validate({"clusterGroupSelector": {}})

    assert by_name.selectors(GROUPS) == [LabelSelector(), GROUPS["edge"].selector]
    assert sorted(map(str, by_selector.selectors(GROUPS))) == ["tier=core", "tier=edge"]


# --- options ----------------------------------------------------------------------------


def test_target_overrides_are_merged_over_bundle_options() -> None:
    bundle = spec(
        {"clusterSelector": {}, "namespace": "b", "force": True, "correctDrift": False},
        options={"namespace": "a", "defaultNamespace": "d", "correctDrift": True},
    )

    assert resolve(bundle, {}) == DeploymentOptions(
        namespace="b", default_namespace="d", correct_drift=False, force=True
    )


def test_target_without_overrides_keeps_bundle_options() -> None:
    options = {"namespace": "a", "keepResources": True}
    bundle = spec({"clusterSelector": {}}, options=options)

    assert resolve(bundle, {}) == DeploymentOptions.model_validate(options)


def test_overrides_of_one_target_do_not_leak_to_another() -> None:
    bundle = spec(
        {"clusterSelector": {"matchLabels": {"env": "prod"}}, "defaultNamespace": "prod"},
        {"clusterSelector": {}},
        options={"defaultNamespace": "apps"},
    )

    assert resolve(bundle, {"env": "prod"}) == DeploymentOptions(default_namespace="prod")
    assert resolve(bundle, {"env": "dev"}) == DeploymentOptions(default_namespace="apps")
    assert bundle.options == DeploymentOptions(default_namespace="apps")


# --- YAML/JSON spelling -----------------------------------------------------------------


def test_fleet_camel_case_fields_are_read() -> None:
    bundle = BundleSpec.model_validate(
        {
            "name": "web",
            "options": {
                "defaultNamespace": "apps",
                "correctDrift": True,
                "keepResources": True,
                "force": True,
                "namespace": "web",
            },
            "targets": [
                {
                    "name": "prod",
                    "clusterSelector": {
                        "matchLabels": {"env": "prod"},
                        "matchExpressions": [
                            {"key": "region", "operator": "In", "values": ["eu", "us"]}
                        ],
                    },
                    "clusterGroup": "edge",
                    "clusterGroupSelector": {"matchLabels": {"region": "eu"}},
                    "clusterName": "c1",
                    "doNotDeploy": True,
                }
            ],
        }
    )

    assert bundle.options == DeploymentOptions(
        default_namespace="apps",
        correct_drift=True,
        keep_resources=True,
        force=True,
        namespace="web",
    )
    target = bundle.targets[0]
    assert target.cluster_selector == LabelSelector.model_validate(
        {
            "matchLabels": {"env": "prod"},
            "matchExpressions": [{"key": "region", "operator": "In", "values": ["eu", "us"]}],
        }
    )
    assert target.cluster_selector is not None
    assert str(target.cluster_selector) == "env=prod,region in (eu,us)"
    assert target.cluster_group == "edge"
    assert str(target.cluster_group_selector) == "region=eu"
    assert target.cluster_name == "c1"
    assert target.do_not_deploy


def test_snake_case_names_are_accepted_too() -> None:
    target = BundleTarget(cluster_name="c1", do_not_deploy=True)

    assert target == BundleTarget.model_validate({"clusterName": "c1", "doNotDeploy": True})


def test_misspelt_selector_field_in_a_target_is_an_error() -> None:
    with pytest.raises(ValidationError, match="matchLabel"):
        BundleTarget.model_validate({"clusterSelector": {"matchLabel": {"env": "prod"}}})


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["web", "a", "web-1", "1web", "a" * 63])
def test_valid_bundle_names(name: str) -> None:
    assert validate_bundle_name(name) == name
    assert BundleSpec(name=name).name == name


@pytest.mark.parametrize(
    "name",
    ["", "Web", "web_1", "-web", "web-", "web.app", "web app", "web*", "web>", "web\n", "a" * 64],
)
def test_invalid_bundle_names_are_rejected_naming_the_name(name: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_bundle_name(name)

    assert info.value.field == "name"
    assert info.value.value == name
    assert repr(name) in str(info.value)

    with pytest.raises(ValidationError) as validation:
        BundleSpec.model_validate({"name": name})

    assert f"invalid bundle name {name!r}" in str(validation.value)


def test_bundle_name_with_trailing_newline_is_rejected() -> None:
    # The name becomes a NATS subject token; a line break there breaks the protocol.
    with pytest.raises(InvalidNameError):
        validate_bundle_name("web\n")


@pytest.mark.parametrize("name", ["c1", "edge-01.example.com", "a" * 253])
def test_valid_cluster_names(name: str) -> None:
    assert validate_cluster_name(name) == name


@pytest.mark.parametrize("name", ["", "C1", "c_1", "-c1", "c1.", "c 1", "c1\n", "a" * 254])
def test_invalid_cluster_names(name: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_cluster_name(name)

    assert info.value.value == name


def test_cluster_labels_are_validated() -> None:
    assert Cluster(id="x", name="c1", labels={"env": "prod"}).labels == {"env": "prod"}
    with pytest.raises(ValidationError, match="'bad key'"):
        Cluster(id="x", name="c1", labels={"bad key": "prod"})
