"""Reading fleet.yaml as Fleet users write it, and the bundle it describes.

The operator sees: every documented field taken into account, a typo
reported as a warning naming the file and key (instead of silently doing
nothing), a broken file rejected with its name, line and field, and
customizations that tailor the clusters the source's targets select.
"""

from __future__ import annotations

from textwrap import dedent

import pytest

from bundles.errors import FleetYamlError
from bundles.fleetyaml import FleetYaml, load_fleet_yaml, to_spec
from protocol.ids import options_digest
from protocol.models import (
    BundleSpec,
    BundleTarget,
    ClusterGroup,
    DeploymentOptions,
    HelmOptions,
    KeyRef,
    ValuesFrom,
)
from protocol.selectors import LabelSelector, parse_selector

FILE = "single-cluster/helm/fleet.yaml"
NO_GROUPS: dict[str, ClusterGroup] = {}


def load(text: str) -> tuple[FleetYaml, list[str]]:
    return load_fleet_yaml(dedent(text), FILE)


def spec_of(text: str, *, targets: tuple[BundleTarget, ...] = ()) -> BundleSpec:
    fleet, warnings = load(text)
    assert warnings == []
    return to_spec("web", fleet, targets=targets)


def resolve(spec: BundleSpec, **labels: str) -> DeploymentOptions | None:
    return spec.resolve(cluster_name="c1", labels=labels, groups=NO_GROUPS)


# --- every field group ---------------------------------------------------------------


def test_namespaces_labels_and_bundle_level_fields() -> None:
    spec = spec_of(
        """
        name: web-app
        defaultNamespace: apps
        namespace: web
        namespaceLabels: {team: shop}
        namespaceAnnotations: {owner: ops}
        serviceAccount: deployer
        labels: {app: web}
        paused: true
        keepResources: true
        deleteNamespace: true
        rolloutStrategy:
          maxUnavailable: 15%
          partitions:
          - name: canary
            clusterSelector: {matchLabels: {env: canary}}
        dependsOn:
        - name: one-multi-cluster-hello-world
        - selector: {matchLabels: {app: weak-monkey}}
        """
    )

    assert spec.name == "web-app"
    assert spec.options == DeploymentOptions(
        default_namespace="apps",
        namespace="web",
        namespace_labels={"team": "shop"},
        namespace_annotations={"owner": "ops"},
        service_account="deployer",
        keep_resources=True,
        delete_namespace=True,
    )
    assert spec.labels == {"app": "web"}
    assert spec.paused
    assert spec.rollout_strategy["maxUnavailable"] == "15%"
    assert spec.rollout_strategy["partitions"][0]["name"] == "canary"
    assert spec.depends_on[0].name == "one-multi-cluster-hello-world"
    assert spec.depends_on[1].selector == parse_selector("app=weak-monkey")


def test_helm_options_in_full() -> None:
    fleet, warnings = load(
        """
        helm:
          chart: ./chart
          repo: https://charts.example.com
          version: 0.1.0
          releaseName: my-release
          takeOwnership: true
          force: true
          atomic: true
          timeoutSeconds: 300
          maxHistory: 5
          waitForJobs: true
          disablePreProcess: true
          values:
            image: {tag: "1.2"}
            replicas: 2
            nothing: null
          valuesFiles: [values-prod.yaml]
          valuesFrom:
          - configMapKeyRef: {name: cm-values, namespace: default, key: values.yaml}
          - secretKeyRef: {name: secret-values, key: values.yaml}
          templateValues:
            region: "${ .ClusterLabels.region }"
        """
    )

    assert warnings == []
    assert fleet.helm == HelmOptions(
        chart="./chart",
        repo="https://charts.example.com",
        version="0.1.0",
        release_name="my-release",
        take_ownership=True,
        force=True,
        atomic=True,
        timeout_seconds=300,
        max_history=5,
        wait_for_jobs=True,
        disable_pre_process=True,
        values={"image": {"tag": "1.2"}, "replicas": 2, "nothing": None},
        values_files=("values-prod.yaml",),
        values_from=(
            ValuesFrom(
                config_map_key_ref=KeyRef(name="cm-values", namespace="default", key="values.yaml")
            ),
            ValuesFrom(secret_key_ref=KeyRef(name="secret-values", key="values.yaml")),
        ),
        template_values={"region": "${ .ClusterLabels.region }"},
    )


def test_kustomize_yaml_diff_correct_drift_and_ignore() -> None:
    spec = spec_of(
        """
        kustomize: {dir: overlays/prod}
        yaml: {overlays: [common]}
        diff:
          comparePatches:
          - apiVersion: admissionregistration.k8s.io/v1
            kind: MutatingWebhookConfiguration
            name: hook
            operations:
            - {"op": "remove", "path": "/webhooks/0/failurePolicy"}
            jsonPointers: [/metadata/labels]
        correctDrift: {enabled: true, force: true, keepFailHistory: true}
        ignore:
          conditions:
          - {type: Ready, status: "False"}
        """
    )

    options = spec.options
    assert options.kustomize is not None and options.kustomize.dir == "overlays/prod"
    assert options.yaml is not None and options.yaml.overlays == ("common",)
    assert options.diff is not None
    assert options.diff.compare_patches[0].operations[0].path == "/webhooks/0/failurePolicy"
    assert options.diff.compare_patches[0].json_pointers == ("/metadata/labels",)
    assert options.correct_drift and options.force
    assert options.ignore is not None and options.ignore.conditions == (
        {"type": "Ready", "status": "False"},
    )


def test_empty_option_blocks_mean_the_same_as_none() -> None:
    # single-cluster/kustomize in fleet-examples writes ``kustomize: {dir: ""}``.
    spec = spec_of("namespace: x\nkustomize:\n  dir: ''\nhelm: {}\n")

    assert spec.options == DeploymentOptions(namespace="x")
    assert options_digest(spec.options) == options_digest(DeploymentOptions(namespace="x"))


def test_an_empty_file_is_an_empty_fleet_yaml() -> None:
    fleet, warnings = load("# only a comment\n")

    assert fleet.model_dump() == FleetYaml().model_dump()
    assert fleet.file == FILE
    assert warnings == []


def test_timestamps_stay_strings_as_in_fleet() -> None:
    fleet, _ = load("helm:\n  values:\n    since: 2024-01-01\n")

    assert fleet.helm is not None and fleet.helm.values == {"since": "2024-01-01"}


# --- customizations and targets ------------------------------------------------------

MULTI_CLUSTER = """
namespace: fleet-mc-helm-example
helm:
  values: {replicas: 1, serviceType: NodePort}
targetCustomizations:
- name: dev
  clusterSelector: {matchLabels: {env: dev}}
  helm:
    values: {replication: false}
- name: prod
  clusterSelector: {matchLabels: {env: prod}}
  namespace: prod-apps
  correctDrift: {enabled: true}
  helm:
    values: {serviceType: LoadBalancer, replicas: 3}
- clusterSelector: {matchLabels: {env: lab}}
  doNotDeploy: true
"""


def test_customizations_tailor_values_per_cluster() -> None:
    spec = spec_of(MULTI_CLUSTER)

    prod = resolve(spec, env="prod")
    dev = resolve(spec, env="dev")
    other = resolve(spec, env="qa")

    assert prod is not None and prod.helm is not None
    assert prod.helm.values == {"replicas": 3, "serviceType": "LoadBalancer"}
    assert prod.namespace == "prod-apps"
    assert prod.correct_drift
    assert dev is not None and dev.helm is not None
    assert dev.helm.values == {"replicas": 1, "serviceType": "NodePort", "replication": False}
    assert other == spec.options


def test_without_source_targets_every_cluster_gets_the_bundle_except_do_not_deploy() -> None:
    spec = spec_of(MULTI_CLUSTER)

    assert resolve(spec, env="qa") is not None
    assert resolve(spec) is not None
    assert resolve(spec, env="lab") is None


def test_unnamed_customizations_get_fleets_default_names() -> None:
    spec = spec_of(MULTI_CLUSTER)

    assert [t.name for t in spec.targets] == ["dev", "prod", "target002", "default"]


def test_source_targets_restrict_and_come_after_the_customizations() -> None:
    eu = BundleTarget(name="eu", cluster_selector=parse_selector("region=eu"))

    spec = spec_of(MULTI_CLUSTER, targets=(eu,))

    assert spec.target_restrictions == (eu,)
    assert spec.targets[-1] == eu
    assert resolve(spec, env="prod", region="us") is None
    prod_eu = resolve(spec, env="prod", region="eu")
    assert prod_eu is not None and prod_eu.namespace == "prod-apps"
    assert resolve(spec, env="qa", region="eu") == spec.options


def test_override_targets_replace_the_source_targets() -> None:
    text = MULTI_CLUSTER + "overrideTargets:\n- clusterSelector: {matchLabels: {region: us}}\n"
    eu = BundleTarget(name="eu", cluster_selector=parse_selector("region=eu"))

    spec = spec_of(text, targets=(eu,))

    assert [str(t.cluster_selector) for t in spec.target_restrictions] == ["region=us"]
    assert resolve(spec, env="prod", region="eu") is None
    assert resolve(spec, env="prod", region="us") is not None


def test_customization_override_fields() -> None:
    fleet, warnings = load(
        """
        targetCustomizations:
        - name: edge
          clusterName: edge-1
          clusterGroup: shops
          clusterGroupSelector: {matchLabels: {region: eu}}
          defaultNamespace: edge
          serviceAccount: edge-sa
          kustomize: {dir: overlays/edge}
          yaml: {overlays: [edge]}
          keepResources: true
          namespaceLabels: {zone: a}
          diff: {comparePatches: [{kind: Service, name: web, jsonPointers: [/spec]}]}
        """
    )
    target = to_spec("web", fleet).targets[0]

    assert warnings == []
    assert target.cluster_name == "edge-1"
    assert target.cluster_group == "shops"
    assert target.cluster_group_selector == parse_selector("region=eu")
    assert target.default_namespace == "edge"
    assert target.service_account == "edge-sa"
    assert target.kustomize is not None and target.kustomize.dir == "overlays/edge"
    assert target.yaml is not None and target.yaml.overlays == ("edge",)
    assert target.keep_resources is True
    assert target.namespace_labels == {"zone": "a"}
    assert target.diff is not None and target.diff.compare_patches[0].kind == "Service"


def test_null_values_mean_unset_outside_helm_values() -> None:
    fleet, _ = load(
        "namespace: null\ntargetCustomizations:\n- name: a\n  clusterSelector: {}\n  helm: null\n"
    )

    assert fleet.namespace == ""
    assert fleet.target_customizations[0].helm is None
    assert fleet.target_customizations[0].cluster_selector == LabelSelector()


# --- warnings --------------------------------------------------------------------------


def test_unknown_keys_are_warnings_naming_file_and_key_path() -> None:
    _, warnings = load(
        """
        helm:
          valuesFile: [values.yaml]
        targetCustomizations:
        - name: prod
          clusterSelector: {}
          helmm: {}
        nmespace: web
        """
    )

    assert warnings == [
        f"{FILE}: unknown key helm.valuesFile",
        f"{FILE}: unknown key targetCustomizations[0].helmm",
        f"{FILE}: unknown key nmespace",
    ]


def test_fleet_keys_shoal_does_not_act_on_are_warned_about() -> None:
    fleet, warnings = load(
        """
        imageScans:
        - image: nginx
          tagName: latest
        namespace: web
        """
    )

    assert fleet.namespace == "web"
    assert warnings == [f"{FILE}: imageScans: image scans are not supported; the key is ignored"]


# --- errors ----------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line() -> None:
    with pytest.raises(FleetYamlError) as info:
        load("namespace: web\nhelm:\n  values: [unclosed\n")

    assert str(info.value).startswith(f"{FILE} (line ")
    assert "invalid YAML" in str(info.value)
    assert info.value.file == FILE


def test_a_wrong_type_names_file_line_and_field() -> None:
    with pytest.raises(FleetYamlError) as info:
        load(
            """
            namespace: web
            targetCustomizations:
            - name: prod
              helm:
                timeoutSeconds: soon
            """
        )

    message = str(info.value)
    assert message.startswith(f"{FILE} (line 6): targetCustomizations[0].helm.timeoutSeconds:")
    assert info.value.field == "targetCustomizations[0].helm.timeoutSeconds"


def test_a_misspelt_selector_key_is_an_error_not_a_warning() -> None:
    # A selector that silently matched every cluster would deploy everywhere.
    with pytest.raises(FleetYamlError, match=r"clusterSelector.matchLabel"):
        load("targetCustomizations:\n- clusterSelector:\n    matchLabel: {env: prod}\n")


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(FleetYamlError, match="expected a mapping"):
        load("- namespace: web\n")


def test_invalid_bundle_labels_and_names_are_refused_naming_the_file() -> None:
    fleet, _ = load("labels: {'bad key': x}\n")
    with pytest.raises(FleetYamlError, match=rf"^{FILE}: labels"):
        to_spec("web", fleet)

    fleet, _ = load("name: Web_App\n")
    with pytest.raises(FleetYamlError, match=r"invalid bundle name 'Web_App'"):
        to_spec("web", fleet)


def test_map_keys_become_strings_as_fleet_reads_yaml_through_json() -> None:
    fleet, _ = load("helm:\n  values:\n    ports: {80: http, true: yes}\n")

    assert fleet.helm is not None
    assert fleet.helm.values == {"ports": {"80": "http", "true": True}}


def test_empty_override_targets_with_no_customization_deploy_everywhere() -> None:
    spec = spec_of("overrideTargets: []\n")

    assert spec.target_restrictions == ()
    assert resolve(spec, env="any") is not None
