"""Durations on the command line: ``90``, ``15s``, ``30m``, ``24h``, ``7d``, ``1h30m``."""

from __future__ import annotations

import re

from shoal_cli.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    if pos != len(value) or not value:
        raise UsageError(f"invalid duration {text!r}: want e.g. 90, 15s, 30m, 24h or 7d")
    return total
