"""A pretend K3s node for running ``deploy/install.sh`` unprivileged.

The install script prefixes every path it writes with ``SHOAL_ROOT`` and takes
``systemctl`` from ``PATH``. A :class:`Node` is a directory used as that root,
holding a K3s kubeconfig, plus a stub ``systemctl`` outside it that records
each call as one line of arguments. The unit tests run the script's
validation against it; the integration tests run whole installs, re-runs and
uninstalls, installing a stub agent package from a wheel built here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTALL_SH = REPO / "deploy" / "install.sh"
UNIT = REPO / "deploy" / "shoal-agent.service"
K3S_KUBECONFIG = "etc/rancher/k3s/k3s.yaml"
UNINSTALL_SH = "usr/local/bin/shoal-agent-uninstall.sh"
ENV_FILE = "etc/shoal/agent.env"
UNIT_FILE = "etc/systemd/system/shoal-agent.service"
VENV = "opt/shoal/venv"
STATE_DIR = "var/lib/shoal"

SYSTEMCTL_STUB = """\
#!/bin/sh
echo "$*" >> "$SYSTEMCTL_LOG"
"""

URL = "nats://shoal.example.com:4222"
TOKEN = "shoal_T0ken-never-printed"


@dataclass(frozen=True)
class Node:
    root: Path
    stubs: Path

    @classmethod
    def create(cls, base: Path, *, kubeconfig: bool = True) -> Node:
        node = cls(root=base / "root", stubs=base / "stubs")
        node.root.mkdir(parents=True)
        node.stubs.mkdir()
        systemctl = node.stubs / "systemctl"
        systemctl.write_text(SYSTEMCTL_STUB)
        systemctl.chmod(0o755)
        if kubeconfig:
            node.path(K3S_KUBECONFIG).parent.mkdir(parents=True)
            node.path(K3S_KUBECONFIG).write_text("apiVersion: v1\nkind: Config\n")
        return node

    def clone(self, base: Path) -> Node:
        """A new node whose root is a copy of this one's (the venv included)."""
        node = Node.create(base, kubeconfig=False)
        shutil.copytree(self.root, node.root, symlinks=True, dirs_exist_ok=True)
        return node

    def path(self, relative: str) -> Path:
        return self.root / relative

    def environ(self, **shoal: str) -> dict[str, str]:
        """A clean environment: nothing of the caller's ``SHOAL_*`` leaks in."""
        return {
            "PATH": f"{self.stubs}{os.pathsep}{os.environ['PATH']}",
            "HOME": os.environ.get("HOME", str(self.stubs)),
            "SYSTEMCTL_LOG": str(self.stubs / "systemctl.log"),
            "SHOAL_ROOT": str(self.root),
            "SHOAL_PYTHON": sys.executable,
            "PIP_NO_CACHE_DIR": "1",
            **shoal,
        }

    def install(self, **shoal: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(INSTALL_SH)],
            env=self.environ(**shoal),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def uninstall(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(self.path(UNINSTALL_SH)), *args],
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def systemctl_calls(self) -> list[str]:
        """Every systemctl call since the last :meth:`forget_calls`, in order."""
        log = self.stubs / "systemctl.log"
        return log.read_text().splitlines() if log.exists() else []

    def forget_calls(self) -> None:
        (self.stubs / "systemctl.log").unlink(missing_ok=True)

    def files(self) -> set[str]:
        """Every file under the root, as a path relative to it."""
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if not p.is_dir()}


def build_agent_wheel(directory: Path, version: str) -> Path:
    """A tiny wheel whose ``shoal`` command answers ``shoal agent --help``.

    It stands in for the real package, which would take pip most of a minute to
    install with its dependencies; the installer only needs the command.
    """
    name = "shoal_stub"
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": (
            "import sys\n\n\ndef main() -> None:\n"
            "    sys.exit(0 if sys.argv[1:2] == ['agent'] else 2)\n"
        ),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: shoal-stub\nVersion: {version}\n",
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{dist_info}/entry_points.txt": f"[console_scripts]\nshoal = {name}:main\n",
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={encoded},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel
