"""Errors the CLI prints: one line for a person, and an exit code.

::

    CliError                exit 1: the request was refused or failed
    ├── ControlPlaneTimeout exit 1: no answer in time (asking again may work)
    └── UsageError          exit 2: the command line itself is wrong
"""

from __future__ import annotations


class CliError(Exception):
    exit_code = 1


class UsageError(CliError):
    exit_code = 2


class ControlPlaneTimeout(CliError):
    """The control plane did not answer in time: busy or gone, not a refusal."""
