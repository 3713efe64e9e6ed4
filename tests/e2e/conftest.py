"""E2E fixtures: a shoal installation in a temporary directory, torn down after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Shoal

WEB_V1 = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: nginx:{tag}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
"""


def write_bundle(directory: Path, *, tag: str = "1.27", replicas: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "web.yaml").write_text(WEB_V1.format(tag=tag, replicas=replicas))
    (directory / "config.yml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  tag: '" + tag + "'\n"
    )
    return directory


@pytest.fixture
def shoal(tmp_path: Path) -> Iterator[Shoal]:
    installation = Shoal(workdir=tmp_path)
    installation.start_server()
    try:
        yield installation
    finally:
        installation.stop_all()
