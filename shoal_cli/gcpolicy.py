"""Cyclic garbage collector settings for shoal's processes.

CPython runs a young collection every 700 net container allocations and,
every 100 of those, may walk every tracked object in the process. shoal's
busy processes hold many long-lived objects (a control plane's cluster
records, a simulated fleet's thousands of agents) and allocate in bursts whose
objects mostly die young (a rollout's status reports, a registration storm).
With the default thresholds the collector re-walks the long-lived objects over
and over: in ``python -m benchmarks rollout --clusters 10000`` it took more
than half of the fleet process's time (all Ready in 8.2-9.5 s; 3.0-3.7 s with
the thresholds below).

A young generation of 100,000 objects still collects short-lived cycles within
milliseconds of work; a full collection stays subject to CPython's own rule
that it runs only once the objects promoted since the last one exceed a
quarter of those that survived it, so its cost stays proportional to growth.
"""

from __future__ import annotations

import gc

YOUNG = 100_000  # allocations between young collections (CPython's default: 700)
MIDDLE = 50  # young collections per middle one (default 10)
OLD = 10  # middle collections before a full one is considered (default 10)
# A process running a simulated fleet of tens of thousands of agents: there a
# young collection cost 0.3-0.4 s each at 100,000 (40,000 agents in one
# process: 8 collections, 3.1 of the rollout's 15.6 CPU s), far beyond what
# the objects it finds explain; ten times fewer of them cost no such time.
FLEET_YOUNG = 1_000_000


def tune(*, fleet: bool = False) -> None:
    """Set this process's collector thresholds (call once, early)."""
    gc.set_threshold(FLEET_YOUNG if fleet else YOUNG, MIDDLE, OLD)
