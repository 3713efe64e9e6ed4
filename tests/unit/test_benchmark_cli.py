"""``python -m benchmarks``: the defaults that depend on the fleet's size and the machine."""

from __future__ import annotations

import os

import pytest

from benchmarks.__main__ import build_parser, main, resolve_defaults
from benchmarks.rollout import control_plane_env


def parsed(*argv: str) -> dict[str, object]:
    args = build_parser().parse_args(argv)
    resolve_defaults(args)
    return {
        "processes": args.processes,
        "driven": args.driven_heartbeats,
        "timeout": args.timeout,
        "heartbeat_interval": args.heartbeat_interval,
    }


def test_a_large_rollout_gets_a_worker_per_cpu_driven_heartbeats_and_time_to_register() -> None:
    assert parsed("rollout", "--clusters", "100000") == {
        "processes": os.cpu_count() or 1,
        "driven": (os.cpu_count() or 1) > 1,
        "timeout": 400.0,
        "heartbeat_interval": None,  # the rollout's agents keep their own
    }


def test_a_small_rollout_runs_the_fleet_in_the_harness_process() -> None:
    assert parsed("rollout", "--clusters", "10000") == {
        "processes": 1,
        "driven": False,
        "timeout": 300.0,
        "heartbeat_interval": None,
    }


def test_what_the_command_line_says_wins_over_the_defaults() -> None:
    assert parsed(
        "rollout",
        "--clusters",
        "100000",
        "--processes",
        "3",
        "--no-driven-heartbeats",
        "--timeout",
        "30",
        "--heartbeat-interval",
        "15",
    ) == {"processes": 3, "driven": False, "timeout": 30.0, "heartbeat_interval": 15.0}
    # heartbeat measures what the agents' own timers offer unless asked otherwise
    heartbeat = parsed("heartbeat", "--clusters", "30000", "--processes", "2")
    assert heartbeat["driven"] is False
    assert heartbeat["heartbeat_interval"] == 0.5


def test_non_positive_counts_and_intervals_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollout", "--processes", "0"]) == 2
    assert main(["rollout", "--heartbeat-interval", "0"]) == 2
    assert "--processes" in capsys.readouterr().err


def test_agents_that_beat_less_often_are_given_as_long_before_they_are_offline() -> None:
    assert control_plane_env(None) == {}  # the defaults agree: 4 x 5 s = 20 s
    assert control_plane_env(15) == {"SHOAL_HEARTBEAT_TIMEOUT": "60"}
