"""Settings come from defaults, then SHOAL_* variables, then flags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controlplane.settings import ServerSettings
from edgeagent.settings import AgentSettings


def test_environment_overrides_defaults_and_flags_override_environment() -> None:
    env = {"SHOAL_HEARTBEAT_TIMEOUT": "42", "SHOAL_PORT": "4333", "UNRELATED": "x"}

    settings = ServerSettings.from_env(env, port=5000, nats_url=None)

    assert settings.heartbeat_timeout == 42.0
    assert settings.port == 5000  # the flag wins
    assert settings.nats_url is None  # a flag not given leaves the default


def test_agent_settings_read_the_same_prefix() -> None:
    settings = AgentSettings.from_env({"SHOAL_HEARTBEAT_INTERVAL": "0.5"})

    assert settings.heartbeat_interval == 0.5
    assert settings.status_interval == AgentSettings().status_interval


def test_a_bad_value_names_the_setting() -> None:
    with pytest.raises(ValidationError, match="heartbeat_timeout"):
        ServerSettings.from_env({"SHOAL_HEARTBEAT_TIMEOUT": "soon"})
