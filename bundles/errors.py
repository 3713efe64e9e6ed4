"""Errors of the bundle format and its renderers.

Every error names where the problem is (``file``, and ``field`` when a key is
at fault) so that the operator can fix it without guessing; the message says
the cause. Engine failures (Helm, Kustomize) carry the engine's own message::

    BundleError                   a bundle cannot be read or rendered (``file``, ``field``)
    ├── FleetYamlError            fleet.yaml is not valid YAML or not Fleet's schema
    ├── DiscoveryError            a directory cannot be turned into bundles
    ├── OverlayError              an overlay or patch cannot be applied
    ├── TemplateError             a ``${ ... }`` template cannot be evaluated
    ├── HelmError                 Helm refused the chart or its templates
    │   └── ChartNotFound         a chart (directory, URL, repository, OCI) is not there
    └── KustomizeError            kustomize refused the directory
"""

from __future__ import annotations


class BundleError(Exception):
    """A bundle cannot be read or rendered; ``file`` and ``field`` say where."""

    def __init__(self, message: str, *, file: str = "", field: str = "") -> None:
        super().__init__(message)
        self.file = file
        self.field = field


class FleetYamlError(BundleError):
    pass


class DiscoveryError(BundleError):
    pass


class OverlayError(BundleError):
    pass


class TemplateError(BundleError):
    pass


class HelmError(BundleError):
    pass


class ChartNotFound(HelmError):
    pass


class KustomizeError(BundleError):
    pass
