"""Deployment states, named as Rancher Fleet names them.

A bundle deployment on one cluster is in exactly one state. ``WORST_FIRST``
orders them for summaries: a cluster with one bundle in ErrApplied and one in
Ready is summarised as ErrApplied. ``Offline`` is not a deployment state an
agent reports: the control plane assigns it when a heartbeat is overdue, and it
is neither failed nor ready.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    READY = "Ready"
    NOT_READY = "NotReady"
    WAIT_APPLIED = "WaitApplied"
    ERR_APPLIED = "ErrApplied"
    OUT_OF_SYNC = "OutOfSync"
    MODIFIED = "Modified"
    PENDING = "Pending"
    OFFLINE = "Offline"


WORST_FIRST: tuple[State, ...] = (
    State.ERR_APPLIED,
    State.WAIT_APPLIED,
    State.MODIFIED,
    State.OUT_OF_SYNC,
    State.PENDING,
    State.NOT_READY,
    State.READY,
)

# States an agent may report for a deployment it holds.
AGENT_STATES: frozenset[State] = frozenset(
    {State.READY, State.NOT_READY, State.WAIT_APPLIED, State.ERR_APPLIED, State.MODIFIED}
)


def worst(states: list[State]) -> State | None:
    """The worst of ``states`` by ``WORST_FIRST``; Offline sorts after Ready."""
    if not states:
        return None
    rank = {s: i for i, s in enumerate(WORST_FIRST)}
    return min(states, key=lambda s: rank.get(s, len(rank)))
