"""The ``kubernetes`` backend of ``shoal agent``: bundles applied to a real cluster.

Modules, each one concept:

* :mod:`.loader` imports kubernetes-asyncio without its generated API classes;
* :mod:`.client` is the adapter to the API server (JSON, watch streams, errors);
* :mod:`.discovery` maps apiVersion and kind to a URL and namespaced-ness;
* :mod:`.apply` validates (dry run) and server-side applies, in order;
* :mod:`.inventory` keeps what was applied per bundle, in the cluster;
* :mod:`.watch` watches shoal's objects for drift;
* :mod:`.readiness` and :mod:`.drift` judge live objects (pure functions);
* :mod:`.backend` wires them into a :class:`edgeagent.backend.ClusterBackend`.
"""

from edgeagent.kube.backend import KubeBackend

__all__ = ["KubeBackend"]
