"""The benchmark harness itself, at a small N: its output contract holds and it cleans up.

``python -m benchmarks rollout`` is run as a user runs it, in a subprocess, at
30 clusters in 3 label classes, writing its result file to a temporary
directory. The last line of stdout must be one JSON object with every figure
the issue names; all clusters Ready; and the rollout of a bundle that changes
no selector key must cost exactly one control-plane publish per class (the
first bundle put ``class`` into the schema before the fleet registered, so the
rollout republishes no schema). The ``failover``, ``rollout --processes`` and
``reconnect`` scenarios run the same way at a small N, each checked for its
own contract; ``rollout --processes 2`` (40 clusters) must report the same
figures as the single-process run but the ablation; ``registry`` (200
clusters, the harness playing the clusters' side) must see every cluster's
report taken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.worker import CONNECTIONS_PER_WORKER

CLUSTERS = 30
CLASSES = 3
RUN_TIMEOUT = 90
REQUIRED = (
    "clusters",
    "classes",
    "ready",
    "seconds_to_all_ready",
    "raw_nats_seconds",
    "cp_publishes",
    "cp_rss_bytes_per_cluster",
    "bytes_per_cluster",
    "registration_seconds",
    "ablation_per_cluster_seconds",
    "ablation_publishes",
    "cp_cpu_seconds",
    "nats_cpu_seconds",
    "blob_bytes",
    "machine",
)
PROCESSES_CLUSTERS = 40
# The single-process contract but the ablation, plus what the harness's taps add.
PROCESSES_REQUIRED = (
    *(key for key in REQUIRED if not key.startswith("ablation_")),
    "bytes_per_cluster_with_subjects",
    "desired_messages_published",
    "desired_deliveries",
    "desired_message_bytes",
    "seconds_to_all_reported",
    "status_messages",
    "status_bytes",
    "status_message_bytes",
    "blob_downloads",
    "ratio_to_raw",
    "fleet_cpu_seconds",
)
RECONNECT_CLUSTERS = 40
RECONNECT_REQUIRED = (
    "clusters",
    "offline_clusters",
    "seconds_to_all_ready",
    "seconds_to_reconverge",
    "marked_offline",
    "ok",
)
ROOT = Path(__file__).resolve().parents[2]


def bench_process(
    scenario: str,
    tmp_path: Path,
    *,
    clusters: int = CLUSTERS,
    extra: tuple[str, ...] = (),
    timeout: str = "30",
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m benchmarks SCENARIO ... --json`` as a user does."""
    return subprocess.run(
        [
            sys.executable, "-m", "benchmarks", scenario,
            "--clusters", str(clusters), "--classes", str(CLASSES), *extra,
            "--json", "--timeout", timeout, "--results-dir", str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )  # fmt: skip


def run_bench(
    scenario: str, tmp_path: Path, *, clusters: int = CLUSTERS, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The last line of a run that succeeded, parsed."""
    proc = bench_process(scenario, tmp_path, clusters=clusters, extra=extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_rollout_scenario_output_contract(tmp_path: Path) -> None:
    result = run_bench("rollout", tmp_path)
    missing = [key for key in REQUIRED if key not in result]
    assert not missing, missing
    assert result["clusters"] == CLUSTERS
    assert result["classes"] == CLASSES
    assert result["ready"] == CLUSTERS
    assert result["cp_classes"] == CLASSES
    assert result["cp_publishes"] == CLASSES
    assert result["desired_messages_published"] == CLASSES
    assert result["raw_nats_seconds"] > 0
    assert result["seconds_to_all_ready"] > 0
    assert result["ablation_publishes"] == CLUSTERS
    assert result["ablation_ready"] == CLUSTERS
    assert 0 < result["bytes_per_cluster"] <= 256
    assert result["blob_bytes"] > 0
    files = list(tmp_path.glob(f"rollout_{CLUSTERS}_*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["ready"] == CLUSTERS


def test_failover_scenario_survives_the_leader(tmp_path: Path) -> None:
    result = run_bench("failover", tmp_path)
    assert result["ok"], result["errors"]
    assert result["killed_was_leader"]
    assert result["ready"] == CLUSTERS
    assert result["final_states"] == {"Ready": CLUSTERS}
    assert result["shards_owned_by_survivor"] == 16
    assert result["survivor_is_leader"]


def test_rollout_over_worker_processes(tmp_path: Path) -> None:
    result = run_bench("rollout", tmp_path, clusters=PROCESSES_CLUSTERS, extra=("--processes", "2"))
    missing = [key for key in PROCESSES_REQUIRED if key not in result]
    assert not missing, missing
    assert result["ok"], result["errors"]
    assert result["not_measured"] == ["ablation"]
    assert result["processes"] == 2
    assert result["connections"] == 2 * CONNECTIONS_PER_WORKER
    assert result["ready"] == PROCESSES_CLUSTERS
    assert result["registration_failed"] == 0
    assert result["cp_publishes"] == CLASSES
    assert result["desired_messages_published"] == CLASSES
    # Every cluster, whichever worker runs it, is charged its class's message once.
    assert result["desired_deliveries"] == PROCESSES_CLUSTERS
    assert 0 < result["bytes_per_cluster"] <= 256
    assert result["bytes_per_cluster_with_subjects"] > result["bytes_per_cluster"]
    assert result["status_messages"] >= PROCESSES_CLUSTERS
    assert result["status_message_bytes"] > 0
    assert result["seconds_to_all_reported"] > 0
    # Both views of the rollout over time end with every cluster Ready.
    assert result["reported_by_second"][-1] == PROCESSES_CLUSTERS
    assert result["ready_by_second"][-1] == PROCESSES_CLUSTERS
    assert result["blob_downloads"] >= 1
    assert result["blob_bytes"] > 0
    assert result["raw_nats_seconds"] > 0
    assert result["ratio_to_raw"] > 0
    # Where the rollout's CPU went: the workers' agents, nats-server, the control plane.
    assert result["fleet_cpu_seconds"] > 0 and result["nats_cpu_seconds"] > 0


def test_reconnect_scenario_reconverges_after_the_link_returns(tmp_path: Path) -> None:
    result = run_bench("reconnect", tmp_path, clusters=RECONNECT_CLUSTERS)
    missing = [key for key in RECONNECT_REQUIRED if key not in result]
    assert not missing, missing
    assert result["ok"], result["errors"]
    offline = RECONNECT_CLUSTERS // 10
    assert result["offline_clusters"] == offline
    assert result["marked_offline"]
    assert result["offline_still_enforcing"] == offline
    assert result["reconnects"] >= 1
    assert result["ready"] == RECONNECT_CLUSTERS
    assert result["final_states"] == {"Ready": RECONNECT_CLUSTERS}
    assert result["seconds_to_all_ready"] > 0
    assert result["seconds_to_reconverge"] > 0


def test_registry_scenario_registers_and_reports_every_cluster(tmp_path: Path) -> None:
    result = run_bench("registry", tmp_path, clusters=200)
    assert result["ok"], result["errors"]
    assert result["clusters"] == 200
    assert result["registration_failed"] == 0
    assert result["states"] == {"Ready": 200}  # every cluster's own report was taken
    assert result["cp_rss_bytes_after"] >= result["cp_rss_bytes_before"] > 0
    assert result["registrations_per_second"] > 0
    written = list(tmp_path.glob("registry_200_*.json"))
    assert len(written) == 1


def test_a_registration_past_the_timeout_is_an_error_in_the_result(tmp_path: Path) -> None:
    proc = bench_process(
        "rollout", tmp_path, clusters=2000, extra=("--processes", "2"), timeout="0.5"
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any("did not all register within 0.5 s" in e for e in result["errors"]), result
    assert list(tmp_path.glob("rollout_2000_*.json"))
