"""shoal's edge agent: one per cluster, or thousands simulated in one process.

It registers (token -> identity), reads its class's and its own desired
state from the bus (full state on every reconnect, live updates in between),
renders and applies bundles through a :class:`~edgeagent.backend.ClusterBackend`,
watches readiness and drift, and reports batched status plus heartbeats. It
keeps enforcing the last state it saved while the bus is unreachable.

Entry points: :class:`edgeagent.agent.Agent` (``Agent.from_state_dir``),
:class:`edgeagent.simfleet.SimulatedFleet`, :class:`edgeagent.settings.AgentSettings`.
"""
