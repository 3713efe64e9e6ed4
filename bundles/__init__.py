"""Fleet-compatible bundles: the format operators keep in git, and its renderers.

A bundle directory (``fleet.yaml``, raw manifests, a Helm chart, a Kustomize
tree, ``overlays/``) is read here, and turned into Kubernetes objects here, with
Helm's and Kustomize's own engines. Both sides use it: the edge agent renders
for its own cluster, the control plane renders at apply and poll time to reject
a broken bundle whole before any cluster sees it, and ``shoal target`` renders
previews. That is why it is a package of its own beside ``protocol``: it runs
engines (I/O), so it cannot live in ``protocol``, and ``controlplane`` and
``edgeagent`` may not import each other.
"""
