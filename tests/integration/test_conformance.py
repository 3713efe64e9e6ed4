"""Conformance with Fleet: ``shoal target`` renders what ``fleet test`` rendered.

Every case of rancher/fleet-examples that carries Fleet's own expected output
(``../shared/conformance/fleet-examples/tests/expected/<case>/<env>-output.yaml``,
made by Fleet's CI with ``fleet test`` for a cluster labelled ``env=<env>``)
is rendered by ``shoal target <case> -l env=<env> -o json`` and compared by
the corpus's rule: objects keyed by (apiVersion, kind, namespace, name),
Fleet's two bookkeeping keys dropped, everything else equal. The corpus is
read where it lies and never copied; without it these tests skip.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from shoal_cli.main import build_parser

EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared/conformance/fleet-examples"
EXPECTED = EXAMPLES / "tests/expected"
ENVS = ("dev", "test", "prod")
BOOKKEEPING = (
    ("labels", "objectset.rio.cattle.io/hash"),
    ("annotations", "objectset.rio.cattle.io/id"),
)
Key = tuple[str, str, str, str]


def _cases() -> list[str]:
    if not EXPECTED.is_dir():
        return []
    return sorted(
        path.parent.relative_to(EXPECTED).as_posix()
        for path in EXPECTED.glob("*/*/dev-output.yaml")
    )


CASES = _cases()
pytestmark = pytest.mark.skipif(not CASES, reason="../shared/conformance is not there")


def comparable(objects: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    out: dict[Key, dict[str, Any]] = {}
    for original in objects:
        obj = copy.deepcopy(original)
        meta = obj["metadata"]
        for field, key in BOOKKEEPING:
            if isinstance(meta.get(field), dict):
                meta[field].pop(key, None)
                if not meta[field]:
                    del meta[field]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in out, f"{key} rendered twice"
        out[key] = obj
    return out


def shoal_target(case: str, env: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    # The command itself, without main()'s process-wide logging set-up.
    args = build_parser().parse_args(
        ["target", str(EXAMPLES / case), "-l", f"env={env}", "-o", "json"]
    )
    code = asyncio.run(args.func(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    documents: list[dict[str, Any]] = json.loads(captured.out)
    return documents


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("case", CASES or ["(none)"])
def test_shoal_target_renders_what_fleet_test_rendered(
    case: str, env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    expected_file = EXPECTED / case / f"{env}-output.yaml"
    expected = comparable([d for d in yaml.safe_load_all(expected_file.read_text()) if d])

    got = comparable(shoal_target(case, env, capsys))

    assert sorted(got) == sorted(expected)
    for key, obj in expected.items():
        assert got[key] == obj, key


def test_customizations_differ_between_environments(capsys: pytest.CaptureFixture[str]) -> None:
    """The cases are not trivially equal: multi-cluster examples change per env."""
    dev = comparable(shoal_target("multi-cluster/helm", "dev", capsys))
    prod = comparable(shoal_target("multi-cluster/helm", "prod", capsys))
    service = ("v1", "Service", "fleet-mc-helm-example", "frontend")
    assert prod[service]["spec"]["type"] == "LoadBalancer"
    assert dev[service]["spec"].get("type") != "LoadBalancer"
    assert set(prod) != set(dev)  # dev has no redis replicas
