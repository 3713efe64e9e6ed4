"""Fleet's deployment options in shoal's wire model, and how targets use them.

What an operator notices: a targetCustomization changes exactly what it says
for the clusters it matches (Helm values deep-merged, overlays added...), the
GitRepo-style targets decide which clusters get the bundle at all, and
upgrading shoal does not change the IDs of bundles that use none of the new
options (which would redeploy every cluster).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import msgpack
import pytest
from pydantic import ValidationError

from protocol.codec import decode_resources, encode_resources
from protocol.ids import manifest_id, options_digest
from protocol.models import (
    BundleResource,
    BundleSpec,
    BundleTarget,
    ClusterGroup,
    DeploymentOptions,
    HelmOptions,
    TargetOverrides,
)
from protocol.selectors import LabelSelector

NO_GROUPS: dict[str, ClusterGroup] = {}


def options(**fields: Any) -> DeploymentOptions:
    return DeploymentOptions.model_validate(fields)


def override(**fields: Any) -> TargetOverrides:
    return TargetOverrides.model_validate(fields)


# --- IDs stay what they were ---------------------------------------------------------


def test_new_options_at_their_defaults_leave_the_options_digest_as_before() -> None:
    # The digest before helm/kustomize/yaml/... existed: only the set fields, in field order.
    legacy = hashlib.sha256(msgpack.packb({"namespace": "apps", "force": True})).hexdigest()[:16]

    assert options_digest(DeploymentOptions(namespace="apps", force=True)) == legacy
    assert options_digest(options(namespace="apps", force=True, helm=None, yaml=None)) == legacy


def test_text_resources_keep_their_manifest_id_and_binary_ones_get_their_own() -> None:
    text = [BundleResource(name="a.yaml", content="x: 1\n")]
    legacy = "s-" + hashlib.sha256(msgpack.packb([["a.yaml", "x: 1\n"]])).hexdigest()
    chart = BundleResource(
        name="charts/app-1.0.0.tgz",
        content=base64.b64encode(b"\x1f\x8b\x08\x00binary").decode(),
        encoding="base64",
    )

    assert manifest_id(text) == legacy
    assert manifest_id([*text, chart]) != manifest_id(
        [*text, chart.model_copy(update={"encoding": ""})]
    )


def test_binary_resources_survive_the_blob_round_trip() -> None:
    chart = BundleResource(
        name="charts/app.tgz", content=base64.b64encode(b"\x00\xff").decode(), encoding="base64"
    )
    text = BundleResource(name="a.yaml", content="x: 1\n")

    decoded = decode_resources(encode_resources([chart, text]))

    assert decoded == [text, chart]
    assert decoded[1].data() == b"\x00\xff"
    assert decoded[0].data() == b"x: 1\n"


def test_unknown_resource_encodings_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown resource encoding"):
        BundleResource(name="a", content="x", encoding="gzip")


# --- merging a customization -----------------------------------------------------------


def test_helm_values_are_deep_merged_and_the_customization_wins() -> None:
    base = options(helm={"values": {"image": {"repo": "web", "tag": "1"}, "replicas": 1}})

    merged = base.merged(override(helm={"values": {"image": {"tag": "2"}, "debug": True}}))

    assert merged.helm is not None
    assert merged.helm.values == {
        "image": {"repo": "web", "tag": "2"},
        "replicas": 1,
        "debug": True,
    }
    assert base.helm is not None and base.helm.values["image"]["tag"] == "1"


def test_helm_fields_are_replaced_only_when_the_customization_sets_them() -> None:
    base = options(
        helm={"chart": "./chart", "releaseName": "web", "timeoutSeconds": 60, "version": "1.0"}
    )

    merged = base.merged(override(helm={"version": "2.0", "atomic": True}))

    assert merged.helm == HelmOptions(
        chart="./chart", release_name="web", timeout_seconds=60, version="2.0", atomic=True
    )


def test_a_negative_helm_timeout_in_a_customization_resets_it() -> None:
    base = options(helm={"timeoutSeconds": 60})

    merged = base.merged(override(helm={"timeoutSeconds": -1}))

    assert merged.helm is not None and merged.helm.timeout_seconds == 0


def test_helm_flags_stay_on_once_the_bundle_turns_them_on() -> None:
    # Fleet ORs helm flags: a customization adds force, it cannot take it away.
    base = options(helm={"force": True})

    assert base.merged(override(helm={"force": False})).helm == HelmOptions(force=True)
    assert options().merged(override(helm={"takeOwnership": True})).helm == HelmOptions(
        take_ownership=True
    )


def test_values_from_and_template_values_merge_by_key() -> None:
    ref = {"configMapKeyRef": {"name": "cm", "key": "values.yaml"}}
    base = options(helm={"valuesFrom": [ref], "templateValues": {"a": "1", "b": "2"}})

    merged = base.merged(
        override(
            helm={
                "valuesFrom": [ref, {"secretKeyRef": {"name": "s"}}],
                "templateValues": {"b": "3"},
            }
        )
    )

    assert merged.helm is not None
    assert [v.key() for v in merged.helm.values_from] == [
        "configmap||cm|values.yaml",
        "secret||s|",
    ]
    assert merged.helm.template_values == {"a": "1", "b": "3"}


def test_yaml_overlays_of_the_customization_follow_the_bundles() -> None:
    base = options(yaml={"overlays": ["common"]})

    merged = base.merged(override(yaml={"overlays": ["prod"]}))

    assert merged.yaml is not None and merged.yaml.overlays == ("common", "prod")


def test_kustomize_dir_is_replaced_when_set() -> None:
    base = options(kustomize={"dir": "overlays/dev"})

    assert base.merged(override(kustomize={"dir": "overlays/prod"})).kustomize == (
        options(kustomize={"dir": "overlays/prod"}).kustomize
    )
    assert base.merged(override(kustomize={})).kustomize == base.kustomize


def test_namespace_labels_and_compare_patches_merge_by_key() -> None:
    patch = {"apiVersion": "v1", "kind": "Service", "name": "web", "jsonPointers": ["/a"]}
    base = options(namespaceLabels={"team": "a", "tier": "x"}, diff={"comparePatches": [patch]})

    merged = base.merged(
        override(
            namespaceLabels={"tier": "y"},
            diff={"comparePatches": [{**patch, "jsonPointers": ["/b"]}]},
        )
    )

    assert merged.namespace_labels == {"team": "a", "tier": "y"}
    assert merged.diff is not None
    assert [p.json_pointers for p in merged.diff.compare_patches] == [("/b",)]


def test_a_target_without_overrides_returns_the_bundle_options_unchanged() -> None:
    base = options(namespace="apps", helm={"values": {"a": 1}})

    assert base.merged(BundleTarget(name="all", cluster_selector=LabelSelector())) is base


# --- restrictions --------------------------------------------------------------------------


def bundle(*, targets: list[dict[str, Any]], restrictions: list[dict[str, Any]]) -> BundleSpec:
    return BundleSpec.model_validate(
        {
            "name": "web",
            "options": {"namespace": "web"},
            "targets": [*targets, *restrictions],
            "targetRestrictions": restrictions,
        }
    )


def resolve(spec: BundleSpec, labels: dict[str, str]) -> DeploymentOptions | None:
    return spec.resolve(cluster_name="c1", labels=labels, groups=NO_GROUPS)


PROD_CUSTOMIZATION = {
    "name": "prod",
    "clusterSelector": {"matchLabels": {"env": "prod"}},
    "helm": {"values": {"replicas": 3}},
}
EU_ONLY = {"name": "eu", "clusterSelector": {"matchLabels": {"region": "eu"}}}


def test_a_customization_never_adds_a_cluster_the_restrictions_leave_out() -> None:
    spec = bundle(targets=[PROD_CUSTOMIZATION], restrictions=[EU_ONLY])

    assert resolve(spec, {"env": "prod", "region": "us"}) is None


def test_a_restricted_cluster_gets_the_first_matching_customization() -> None:
    spec = bundle(targets=[PROD_CUSTOMIZATION], restrictions=[EU_ONLY])

    prod = resolve(spec, {"env": "prod", "region": "eu"})
    dev = resolve(spec, {"env": "dev", "region": "eu"})

    assert prod is not None and prod.helm is not None and prod.helm.values == {"replicas": 3}
    assert dev == DeploymentOptions(namespace="web")


def test_do_not_deploy_in_a_customization_excludes_a_restricted_cluster() -> None:
    canary = {"clusterSelector": {"matchLabels": {"canary": "no"}}, "doNotDeploy": True}
    spec = bundle(targets=[canary], restrictions=[EU_ONLY])

    assert resolve(spec, {"canary": "no", "region": "eu"}) is None
    assert resolve(spec, {"region": "eu"}) is not None


def test_restriction_selectors_and_names_are_part_of_what_targeting_reads() -> None:
    spec = BundleSpec.model_validate(
        {
            "name": "web",
            "targets": [PROD_CUSTOMIZATION],
            "targetRestrictions": [EU_ONLY, {"clusterName": "edge-1"}, {"clusterGroup": "shops"}],
        }
    )

    assert [str(s) for s in spec.selectors(NO_GROUPS)] == ["env=prod", "region=eu"]
    assert spec.names_targeted() == {"edge-1"}
    assert spec.groups_targeted() == {"shops"}
    assert len(spec.all_targets()) == 4


def test_bundle_spec_fields_read_in_fleet_spelling_and_leave_the_wire_form_at_defaults() -> None:
    spec = BundleSpec.model_validate(
        {
            "name": "web",
            "labels": {"app": "web"},
            "dependsOn": [{"name": "db"}, {"selector": {"matchLabels": {"tier": "base"}}}],
            "paused": True,
            "rolloutStrategy": {"maxUnavailable": "10%"},
        }
    )

    assert spec.depends_on[0].name == "db"
    assert spec.depends_on[1].selector is not None
    assert spec.rollout_strategy == {"maxUnavailable": "10%"}
    assert BundleSpec(name="web").model_dump(exclude_defaults=True) == {"name": "web"}


def test_bundle_labels_are_validated() -> None:
    with pytest.raises(ValidationError, match="invalid label key"):
        BundleSpec.model_validate({"name": "web", "labels": {"bad key": "x"}})


def test_helm_release_names_follow_helm_rules() -> None:
    assert HelmOptions(release_name="web-1.prod").release_name == "web-1.prod"
    with pytest.raises(ValidationError, match="invalid Helm release name"):
        HelmOptions(release_name="Web_1")
    with pytest.raises(ValidationError, match="at most 53"):
        HelmOptions(release_name="a" * 54)
