"""The base of every service's settings: typed fields, overridable from ``SHOAL_*``.

Both the control plane and the agent keep all their intervals, timeouts and
limits in one pydantic model each; this base maps every field to an
environment variable with the ``SHOAL_`` prefix (``heartbeat_interval`` is
``SHOAL_HEARTBEAT_INTERVAL``). The environment is passed in, so this stays a
pure function of its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "SHOAL_"


class EnvSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Self:
        """Settings from ``SHOAL_*`` variables, then explicit overrides (flags) on top.

        An override of ``None`` means "not given" and leaves the variable or default.
        """
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            env = environ.get(ENV_PREFIX + name.upper())
            if env is not None:
                values[name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
