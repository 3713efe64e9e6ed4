"""``shoal demo``: the whole loop on this machine with simulated clusters."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    demo = commands.add_parser("demo", help="run shoal with simulated clusters on this machine")
    demo.add_argument("--clusters", type=int, default=300)
    demo.add_argument("--once", action="store_true")
    demo.add_argument("--timeout", type=float, default=120.0)
    demo.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
