"""``deploy/install.sh`` end to end on a pretend node: install, re-run, uninstall.

Each run creates or reuses a real virtualenv and pip-installs a stub agent
wheel into it under ``SHOAL_ROOT``; ``systemctl`` is a stub that records its
calls. One first install is shared by the module (creating a virtualenv takes
seconds) and every test works on its own copy of that node.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.install_node import (
    ENV_FILE,
    STATE_DIR,
    TOKEN,
    UNINSTALL_SH,
    UNIT,
    UNIT_FILE,
    URL,
    VENV,
    Node,
    build_agent_wheel,
)

LABELS = "env=prod,region=eu"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("wheels")
    return {v: build_agent_wheel(directory, v) for v in ("0.1.0", "0.2.0")}


def settings(wheels: dict[str, Path], **overrides: str) -> dict[str, str]:
    return {
        "SHOAL_URL": URL,
        "SHOAL_TOKEN": TOKEN,
        "SHOAL_LABELS": LABELS,
        "SHOAL_NAME": "shop-0001",
        "SHOAL_PACKAGE": str(wheels["0.1.0"]),
        "SHOAL_PIP_ARGS": "--no-index",
        **overrides,
    }


@pytest.fixture(scope="module")
def first(
    tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path]
) -> tuple[Node, str, list[str]]:
    """A node after one install: the node, the installer's output, its systemctl calls."""
    node = Node.create(tmp_path_factory.mktemp("first"))
    result = node.install(**settings(wheels))
    assert result.returncode == 0, result.stderr
    return node, result.stdout + result.stderr, node.systemctl_calls()


@pytest.fixture
def node(first: tuple[Node, str, list[str]], tmp_path: Path) -> Node:
    """A copy of the installed node, for a test to change."""
    return first[0].clone(tmp_path)


def env_lines(node: Node) -> list[str]:
    return node.path(ENV_FILE).read_text().splitlines()


def test_install_writes_the_env_file_and_unit_and_starts_the_service(
    first: tuple[Node, str, list[str]],
) -> None:
    node, output, calls = first
    env_file = node.path(ENV_FILE)

    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert {
        f"SHOAL_URL={URL}",
        f"SHOAL_TOKEN={TOKEN}",
        f"SHOAL_LABELS={LABELS}",
        "SHOAL_NAME=shop-0001",
        "KUBECONFIG=/etc/rancher/k3s/k3s.yaml",
    } <= set(env_lines(node))
    assert TOKEN not in output
    assert "shop-0001" in output
    assert node.path(UNIT_FILE).read_text() == UNIT.read_text()
    # What the unit runs and reads is where the installer put it.
    assert (node.path(VENV) / "bin" / "shoal").is_file()
    assert calls == ["daemon-reload", "enable --now shoal-agent"]
    assert node.path(UNINSTALL_SH).stat().st_mode & stat.S_IXUSR


def test_a_rerun_with_the_same_settings_changes_and_restarts_nothing(
    node: Node, wheels: dict[str, Path]
) -> None:
    before = {f: node.path(f).stat().st_mtime_ns for f in (ENV_FILE, UNIT_FILE, UNINSTALL_SH)}

    result = node.install(**settings(wheels))

    assert result.returncode == 0, result.stderr
    after = {f: node.path(f).stat().st_mtime_ns for f in before}
    assert after == before
    assert node.systemctl_calls() == ["enable --now shoal-agent"]


def test_new_labels_alone_rewrite_the_env_file_and_restart(
    node: Node, wheels: dict[str, Path]
) -> None:
    with node.path(ENV_FILE).open("a") as env_file:
        env_file.write("SHOAL_LOG_LEVEL=debug\n")

    # URL, token and name are not given again: the previous ones are kept.
    result = node.install(
        SHOAL_LABELS="env=prod,region=us",
        SHOAL_PACKAGE=str(wheels["0.1.0"]),
        SHOAL_PIP_ARGS="--no-index",
    )

    assert result.returncode == 0, result.stderr
    lines = env_lines(node)
    assert "SHOAL_LABELS=env=prod,region=us" in lines
    assert f"SHOAL_LABELS={LABELS}" not in lines
    assert {f"SHOAL_URL={URL}", f"SHOAL_TOKEN={TOKEN}", "SHOAL_NAME=shop-0001"} <= set(lines)
    assert "SHOAL_LOG_LEVEL=debug" in lines  # a line it does not manage survives
    assert len(lines) == len(set(lines))
    assert stat.S_IMODE(node.path(ENV_FILE).stat().st_mode) == 0o600
    assert node.systemctl_calls() == ["enable --now shoal-agent", "restart shoal-agent"]


def test_an_upgraded_package_restarts_the_service(node: Node, wheels: dict[str, Path]) -> None:
    result = node.install(**settings(wheels, SHOAL_PACKAGE=str(wheels["0.2.0"])))

    assert result.returncode == 0, result.stderr
    site = next(node.path(VENV).glob("lib/python*/site-packages"))
    assert (site / "shoal_stub-0.2.0.dist-info").is_dir()
    assert node.systemctl_calls() == ["enable --now shoal-agent", "restart shoal-agent"]


def test_uninstall_removes_the_agent_and_keeps_its_identity(node: Node) -> None:
    identity = node.path(STATE_DIR) / "identity.json"
    identity.parent.mkdir(parents=True)
    identity.write_text("{}")

    result = node.uninstall()

    assert result.returncode == 0, result.stderr
    for gone in (UNIT_FILE, ENV_FILE, VENV, UNINSTALL_SH):
        assert not node.path(gone).exists(), gone
    assert identity.exists()
    assert "kept its identity in /var/lib/shoal" in result.stdout
    assert node.systemctl_calls() == ["disable --now shoal-agent", "daemon-reload"]


def test_uninstall_purge_removes_the_identity_too(node: Node) -> None:
    node.path(STATE_DIR).mkdir(parents=True)
    (node.path(STATE_DIR) / "identity.json").write_text("{}")

    result = node.uninstall("--purge")

    assert result.returncode == 0, result.stderr
    assert not node.path(STATE_DIR).exists()
    assert not node.path(VENV).exists()
