"""kubernetes-asyncio without its generated API classes, to keep the agent small.

The agent talks to the API server through kubernetes-asyncio's configuration
loaders (kubeconfig, in-cluster, exec and OIDC credential plugins) and its
``ApiClient`` (authentication, TLS, token refresh), but never through the
generated ``CoreV1Api``/``V1Pod`` classes: it works on plain JSON. Importing
the package the ordinary way loads all of those classes, about 36 MB of an
agent whose whole budget is 60 MB.

:func:`load` registers ``kubernetes_asyncio``, ``kubernetes_asyncio.client``
and ``kubernetes_asyncio.client.models`` as *lazy* packages: their submodules
import as usual, and the first access to a name their ``__init__`` defines
runs that ``__init__`` in full. So any other code in the process that uses
the generated classes still gets them; it pays for them only then. If the
package is already imported, nothing is done.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

_LAZY = ("kubernetes_asyncio", "kubernetes_asyncio.client", "kubernetes_asyncio.client.models")


def _lazy_package(name: str) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not installed")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")  # a submodule: no __init__ needed
        del module.__dict__["__getattr__"]
        loader.exec_module(module)  # the real __init__, run on first use
        return getattr(module, attr)

    module.__dict__["__getattr__"] = __getattr__
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def load() -> tuple[type[Any], type[Any], ModuleType, ModuleType]:
    """``(ApiClient, Configuration, kube_config, incluster_config)``, imported light."""
    if "kubernetes_asyncio" not in sys.modules:
        for name in _LAZY:
            _lazy_package(name)
        client = sys.modules["kubernetes_asyncio.client"]
        configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
        api_client = importlib.import_module("kubernetes_asyncio.client.api_client")
        # ``from kubernetes_asyncio.client import ApiClient`` in the config loaders
        # must find these without running the client package's __init__.
        client.__dict__.setdefault("Configuration", configuration.Configuration)
        client.__dict__.setdefault("ApiClient", api_client.ApiClient)
    api_client = importlib.import_module("kubernetes_asyncio.client.api_client")
    configuration = importlib.import_module("kubernetes_asyncio.client.configuration")
    kube_config = importlib.import_module("kubernetes_asyncio.config.kube_config")
    incluster = importlib.import_module("kubernetes_asyncio.config.incluster_config")
    return api_client.ApiClient, configuration.Configuration, kube_config, incluster
