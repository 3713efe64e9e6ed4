"""Per-cluster templating of Helm values, as Fleet does it.

Fleet lets ``helm.values`` (and ``helm.templateValues``) say things like
``${ .ClusterLabels.env }`` or ``${ get .ClusterLabels "region" | default "eu" }``:
Go templates with ``${ }`` delimiters (``{{`` would not survive YAML),
evaluated for each cluster against its name, namespace, labels, annotations
and template values, with ``missingkey=error``. Fleet does this by dumping
the values to YAML text, running the template over the whole text and
parsing the result again; so a value that renders to ``3`` becomes the
number 3, and ``| quote`` makes a string. This module gets the same results
value by value: each string holding ``${`` is rendered and, when Fleet's
dump would have written it unquoted, read back as YAML.

The template language here is the part Fleet users write in values:
fields (``.A.B``, ``$``), string/number/bool literals, ``|`` pipelines,
parentheses, and the functions in :data:`FUNCTIONS` (Go's ``index``,
``printf``, ``eq``... and the Sprig functions people use: ``default``,
``quote``, ``upper``, ``get``, ``hasKey``, ``b64enc``...). Control actions
(``if``, ``range``...) and other functions are a :class:`TemplateError`,
as an unknown function is in Fleet. A literal ``${`` is written
``${ "${" }``; ``helm.disablePreProcess`` turns templating off.

Independently of templating, and even with it off, a value that is exactly
``global.fleet.clusterLabels.<key>`` is replaced by that cluster label
(empty when missing), as Fleet does: :func:`substitute_cluster_labels`.
One deliberate difference: Fleet skips templating for a cluster without
labels; shoal templates every cluster alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from bundles import gotemplate
from bundles.errors import TemplateError
from bundles.fleetyaml import YamlLoader
from protocol.models import HelmOptions

CLUSTER_LABEL_PREFIX = "global.fleet.clusterLabels."
LEFT, RIGHT = "${", "}"


@dataclass(frozen=True)
class ClusterContext:
    """What a template may read about the cluster it renders for."""

    name: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        """The template's ``.``: the keys Fleet defines."""
        return {
            "ClusterNamespace": self.namespace,
            "ClusterName": self.name,
            "ClusterLabels": dict(self.labels),
            "ClusterAnnotations": dict(self.annotations),
            "ClusterValues": dict(self.values),
        }


def render_helm(helm: HelmOptions, ctx: ClusterContext) -> HelmOptions:
    """``helm`` with its values as they are for this cluster (``templateValues`` folded in)."""
    values = render_values(
        helm.values,
        ctx,
        template_values=helm.template_values,
        disable_pre_process=helm.disable_pre_process,
    )
    return helm.model_copy(update={"values": values, "template_values": {}})


def render_values(
    values: Mapping[str, Any],
    ctx: ClusterContext,
    *,
    template_values: Mapping[str, str] | None = None,
    disable_pre_process: bool = False,
    path: str = "helm.values",
) -> dict[str, Any]:
    """Helm values for one cluster: label references substituted, then templates evaluated.

    Each ``templateValues`` entry is rendered, read as YAML and set as a
    top-level value, over what ``values`` gave. Errors name the value's path.
    """
    out = substitute_cluster_labels(values, ctx.labels)
    if disable_pre_process:
        return out
    data = ctx.data()
    rendered = _render_map(out, data, path)
    for key, text in (template_values or {}).items():
        where = f"helm.templateValues.{key}"
        output = render_template(text, data, field=where)
        try:
            rendered[key] = yaml.load(output, Loader=YamlLoader)
        except yaml.YAMLError as exc:
            raise TemplateError(
                f"{where}: rendered text is not YAML: {output!r}", field=where
            ) from exc
    return rendered


def substitute_cluster_labels(
    values: Mapping[str, Any], labels: Mapping[str, str]
) -> dict[str, Any]:
    """A copy with every map value ``global.fleet.clusterLabels.<key>`` set to that label.

    As in Fleet, only values of maps (at any depth, also maps inside lists)
    are looked at, and a missing label gives the empty string.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, str) and value.startswith(CLUSTER_LABEL_PREFIX):
            out[key] = labels.get(value.removeprefix(CLUSTER_LABEL_PREFIX), "")
        elif isinstance(value, Mapping):
            out[key] = substitute_cluster_labels(value, labels)
        elif isinstance(value, list):
            out[key] = [
                substitute_cluster_labels(item, labels) if isinstance(item, Mapping) else item
                for item in value
            ]
        else:
            out[key] = value
    return out


def render_template(text: str, data: Mapping[str, Any], *, field: str = "") -> str:
    """Evaluate one Go template (``${ }`` delimiters, ``missingkey=error``) to text.

    ``${-`` and ``-}`` trim the whitespace before and after an action, and
    ``${/* ... */}`` is a comment, as in Go.
    """
    out: list[str] = []
    pos = 0
    while (start := text.find(LEFT, pos)) >= 0:
        literal = text[pos:start]
        body_start = start + len(LEFT)
        if (
            text[body_start : body_start + 1] == "-"
            and text[body_start + 1 : body_start + 2] in _SPACE
        ):
            literal = literal.rstrip(_SPACE)
            body_start += 1
        out.append(literal)
        end = _action_end(text, body_start, field)
        body = text[body_start:end]
        pos = end + len(RIGHT)
        if len(body) >= 2 and body[-1] == "-" and body[-2] in _SPACE:
            body = body[:-1]
            while pos < len(text) and text[pos] in _SPACE:
                pos += 1
        stripped = body.strip(_SPACE)
        if stripped.startswith("/*") and stripped.endswith("*/"):
            continue
        value = gotemplate.evaluate(stripped, data, field=field)
        out.append(gotemplate.go_print(value))
    out.append(text[pos:])
    return "".join(out)


_SPACE = " \t\r\n"


def _action_end(text: str, pos: int, field: str) -> int:
    """Index of the ``}`` closing an action that starts at ``pos``; strings may hold ``}``."""
    quote = ""
    i = pos
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote != "`":
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in "\"`'":
            quote = char
        elif char == RIGHT:
            return i
        i += 1
    raise TemplateError(f"{field}: unclosed action: no '}}' after '${{'", field=field)


def _render_map(value: Mapping[str, Any], data: Mapping[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = _render_key(key, data, f"{path}.{key}") if isinstance(key, str) else key
        out[name] = _render_tree(item, data, f"{path}.{key}")
    return out


def _render_tree(value: Any, data: Mapping[str, Any], path: str) -> Any:
    if isinstance(value, str):
        return _render_scalar(value, data, path)
    if isinstance(value, Mapping):
        return _render_map(value, data, path)
    if isinstance(value, list):
        return [_render_tree(item, data, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def _render_scalar(text: str, data: Mapping[str, Any], path: str) -> Any:
    if LEFT not in text:
        return text
    output = render_template(text, data, field=path)
    if not _written_plain(text):
        return output
    # Fleet's YAML text held ``key: <template>``; read back what it became.
    try:
        return yaml.load(f"v: {output}", Loader=YamlLoader)["v"]
    except (yaml.YAMLError, TypeError, KeyError) as exc:
        raise TemplateError(
            f"{path}: rendered value is not valid YAML: {output!r}", field=path
        ) from exc


def _render_key(key: str, data: Mapping[str, Any], path: str) -> str:
    value = _render_scalar(key, data, path)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else gotemplate.go_print(value)


_QUOTED_START = re.compile(r"^['\"|>]")


def _written_plain(text: str) -> bool:
    """Whether a YAML dump writes this string unquoted (so a reader may retype it)."""
    dumped = yaml.safe_dump(text, default_flow_style=False, allow_unicode=True)
    return not _QUOTED_START.match(dumped)
