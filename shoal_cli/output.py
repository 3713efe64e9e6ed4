"""Printing results: aligned tables for people, ``-o json`` and ``-o yaml`` for scripts.

Plain text on purpose, as kubectl prints: no colour library is loaded, which
matters because ``shoal agent`` shares this entry point and every megabyte of
its memory is paid on every cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

FORMATS = ("table", "json", "yaml")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="seconds")


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    seconds = max(0, int(now - ts))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def emit(data: Any, fmt: str) -> None:
    if fmt == "json":
        json.dump(data, sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
    elif fmt == "yaml":
        yaml.safe_dump(data, sys.stdout, sort_keys=False)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns aligned and three spaces apart, kubectl-style; ``title`` when nothing to show."""
    if not rows:
        print(f"No {title.lower()}.")
        return
    lines = [list(columns), *(list(map(str, row)) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        print("   ".join(cells).rstrip())


def note(text: str) -> None:
    """A progress or status line for people, on stderr so stdout stays for results."""
    print(text, file=sys.stderr, flush=True)


class Progress:
    """``Ready  n/total  elapsed`` on stderr: redrawn in place on a terminal, else a line
    whenever the count changes (at most every ``every`` seconds), so logs stay short."""

    def __init__(self, label: str, total: int, *, every: float = 2.0) -> None:
        self._label = label
        self._total = total
        self._every = every
        self._tty = sys.stderr.isatty()
        self._last: tuple[int, float] = (-1, -every)

    def update(self, done: int, elapsed: float) -> None:
        text = f"{self._label}  {done}/{self._total}  {elapsed:.1f} s"
        if self._tty:
            sys.stderr.write(f"\r{text}")
            sys.stderr.flush()
        elif done != self._last[0] and (
            elapsed - self._last[1] >= self._every or done >= self._total
        ):
            note(text)
            self._last = (done, elapsed)

    def close(self) -> None:
        if self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
