"""The harness's description of agents that did not converge."""

from __future__ import annotations

from benchmarks.taps import stuck_agents
from edgeagent.agent import Agent
from edgeagent.membus import MemoryBus
from edgeagent.settings import AgentSettings
from edgeagent.simulated import SimulatedCluster
from edgeagent.store import MemoryBlobCache, MemoryStore
from protocol.messages import DesiredBundle
from protocol.states import State


def agent(name: str) -> Agent:
    settings = AgentSettings()
    return Agent(
        bus=MemoryBus(),
        backend=SimulatedCluster.from_settings(settings),
        store=MemoryStore(),
        blob_cache=MemoryBlobCache(),
        settings=settings,
        name=name,
        labels={"class": "c1"},
    )


async def test_lists_agents_not_all_ready_as_they_see_themselves() -> None:
    never_synced, waiting, ready = agent("a"), agent("b"), agent("c")
    desired = DesiredBundle(bundle="web", rev=1, deployment_id="s-1:2")
    for told in (waiting, ready):
        told.reconciler.set_desired({"web": desired})
    ready.reconciler._records["web"].status = ready.reconciler._records["web"].status.model_copy(
        update={"state": State.READY}
    )
    stuck = stuck_agents([never_synced, waiting, ready])
    assert [s["name"] for s in stuck] == ["a", "b"]
    assert stuck[0]["syncs"] == 0 and stuck[0]["statuses"] == {} and stuck[0]["cluster"] is None
    assert stuck[1]["statuses"] == {"web": str(State.WAIT_APPLIED)}
    assert stuck_agents([never_synced, waiting], limit=1) == stuck[:1]
