"""The ``shoal`` command line: one entry point for the server, the agent and the admin API.

This package is the composition root: the only one allowed to import both
``controlplane`` and ``edgeagent`` (the import contracts forbid those two to
import each other).
"""
