"""Per-cluster Helm values: ``${ }`` templates and cluster label references, as Fleet renders them.

What a user sees is the values Helm gets on each cluster: the cluster's own
name and labels filled in, numbers and booleans typed as Fleet types them,
and a clear error naming the value when a template reads something the
cluster does not have.
"""

from __future__ import annotations

from typing import Any

import pytest

from bundles.errors import TemplateError
from bundles.templating import (
    ClusterContext,
    render_helm,
    render_template,
    render_values,
    substitute_cluster_labels,
)
from protocol.models import HelmOptions

CLUSTER = ClusterContext(
    name="shop-0042",
    namespace="fleet-default",
    labels={"env": "prod", "region": "eu-west", "app.kubernetes.io/part-of": "retail"},
    annotations={"owner": "ops"},
    values={"replicas": 3, "site": {"city": "Lyon", "zip": "69001"}, "debug": False},
)


def render(value: Any) -> Any:
    return render_values({"v": value}, CLUSTER)["v"]


# --- the template data ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${ .ClusterName }", "shop-0042"),
        ("${ .ClusterNamespace }", "fleet-default"),
        ("${ .ClusterLabels.env }", "prod"),
        ("${ .ClusterAnnotations.owner }", "ops"),
        ("${ .ClusterValues.site.city }", "Lyon"),
        ('${ get .ClusterLabels "region" }', "eu-west"),
        ('${ index .ClusterLabels "app.kubernetes.io/part-of" }', "retail"),
        ("${ $.ClusterName }", "shop-0042"),
        ("store-${ .ClusterName }.example.com", "store-shop-0042.example.com"),
    ],
)
def test_fields_of_the_cluster(template: str, expected: str) -> None:
    assert render(template) == expected


def test_a_value_that_is_one_template_takes_the_type_it_renders_to() -> None:
    # Fleet templates the values as YAML text and reads them back.
    assert render("${ .ClusterValues.replicas }") == 3
    assert render("${ .ClusterValues.debug }") is False
    assert render("${ .ClusterValues.site.zip }") == 69001
    assert render("${ .ClusterValues.site.zip | quote }") == "69001"
    assert render("zip-${ .ClusterValues.site.zip }") == "zip-69001"


def test_a_value_yaml_would_quote_stays_a_string() -> None:
    # Leading spaces make YAML quote the string, so Fleet never retypes it.
    assert render(" ${ .ClusterValues.replicas }") == " 3"


def test_keys_are_templated_too() -> None:
    rendered = render_values({"${ .ClusterLabels.env }-replicas": 2}, CLUSTER)

    assert rendered == {"prod-replicas": 2}


def test_templates_in_nested_maps_and_lists() -> None:
    values = {
        "ingress": {"hosts": [{"host": "${ .ClusterName }.shops.example"}]},
        "args": ["--site=${ .ClusterValues.site.city | lower }"],
        "count": 5,
    }

    assert render_values(values, CLUSTER) == {
        "ingress": {"hosts": [{"host": "shop-0042.shops.example"}]},
        "args": ["--site=lyon"],
        "count": 5,
    }


# --- functions and pipelines ----------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('${ get .ClusterLabels "tier" | default "standard" }', "standard"),
        ('${ default "standard" .ClusterLabels.env }', "prod"),
        ("${ .ClusterLabels.env | upper }", "PROD"),
        ("${ .ClusterValues.site.city | lower }", "lyon"),
        ('${ "  padded  " | trim }', "padded"),
        ('${ replace "-" "_" .ClusterLabels.region }', "eu_west"),
        ("${ .ClusterLabels.env | quote }", "prod"),
        ("x${ .ClusterLabels.env | quote }", 'x"prod"'),
        ("${ .ClusterValues.replicas | toString | quote }", "3"),
        ('${ int "42" }', 42),
        ('${ "shop" | b64enc }', "c2hvcA=="),
        ('${ hasKey .ClusterLabels "env" }', True),
        ('${ hasKey .ClusterLabels "tier" }', False),
        ('${ printf "%s-%d" .ClusterName .ClusterValues.replicas }', "shop-0042-3"),
        ('${ index .ClusterValues "site" "city" }', "Lyon"),
        ('${ .ClusterLabels.env | eq "prod" }', True),
        ('${ (get .ClusterLabels "region") | upper }', "EU-WEST"),
    ],
)
def test_functions(template: str, expected: Any) -> None:
    assert render(template) == expected


def test_go_printing_of_missing_and_composite_values() -> None:
    data = {"m": {"b": 2, "a": 1}, "l": [1, "x"], "n": None}

    assert render_template("${ .m }", data) == "map[a:1 b:2]"
    assert render_template("${ .l }", data) == "[1 x]"
    assert render_template("${ .n }", data) == "<no value>"
    assert render_template('${ index .m "zz" }', data) == "<no value>"


def test_trim_markers_and_comments() -> None:
    assert render_template("a  ${- .x -}  b", {"x": "-"}) == "a-b"
    assert render_template("a${/* note */}b", {}) == "ab"


def test_a_literal_dollar_brace_is_written_as_a_string_action() -> None:
    assert render('echo ${ "${" }HOME}') == "echo ${HOME}"


def test_template_values_become_top_level_values() -> None:
    rendered = render_values(
        {"replicas": 1, "site": "x"},
        CLUSTER,
        template_values={"site": "city: ${ .ClusterValues.site.city }", "replicas": "5"},
    )

    assert rendered == {"replicas": 5, "site": {"city": "Lyon"}}


def test_render_helm_folds_template_values_into_values() -> None:
    helm = HelmOptions(
        chart="./chart",
        values={"env": "${ .ClusterLabels.env }"},
        template_values={"name": "${ .ClusterName }"},
    )

    rendered = render_helm(helm, CLUSTER)

    assert rendered.values == {"env": "prod", "name": "shop-0042"}
    assert rendered.template_values == {}
    assert rendered.chart == "./chart"


# --- turning it off, and label references -------------------------------------------------


def test_disable_pre_process_leaves_templates_alone() -> None:
    values = {"env": "${ .ClusterLabels.env }", "region": "global.fleet.clusterLabels.region"}

    rendered = render_values(values, CLUSTER, disable_pre_process=True)

    assert rendered == {"env": "${ .ClusterLabels.env }", "region": "eu-west"}


def test_cluster_label_references_are_substituted_in_maps_at_any_depth() -> None:
    values = {
        "a": "global.fleet.clusterLabels.env",
        "b": {"c": "global.fleet.clusterLabels.missing"},
        "d": [{"e": "global.fleet.clusterLabels.region"}, "global.fleet.clusterLabels.env"],
    }

    assert substitute_cluster_labels(values, CLUSTER.labels) == {
        "a": "prod",
        "b": {"c": ""},
        # As in Fleet, only maps are looked at: a bare list item stays as written.
        "d": [{"e": "eu-west"}, "global.fleet.clusterLabels.env"],
    }


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${ .ClusterLabels.tier }", 'map has no entry for key "tier"'),
        ('${ default "x" .ClusterLabels.tier }', 'map has no entry for key "tier"'),
        ("${ .ClusterLabels.env.x }", "can't evaluate field x in type string"),
        ("${HOME}", 'function "HOME" not defined'),
        ("${ if .ClusterName }x${ end }", "'if' action is not supported"),
        ("${ .ClusterName", "unclosed action"),
        ("${ upper .ClusterValues.replicas }", "expected string; got int"),
        ("${ .ClusterName 5 }", "can't give argument to non-function"),
        ("${ $x }", "undefined variable"),
    ],
)
def test_errors_name_the_value_path(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_values({"image": {"tag": template}}, CLUSTER)

    assert message in str(info.value)
    assert str(info.value).startswith("helm.values.image.tag: ")
    assert info.value.field == "helm.values.image.tag"


def test_a_rendered_value_that_breaks_the_yaml_is_an_error() -> None:
    with pytest.raises(TemplateError, match=r"^p\.v: rendered value is not valid YAML"):
        render_values(
            {"v": "${ .ClusterValues.text }"},
            ClusterContext(name="c", values={"text": "a: b: c"}),
            path="p",
        )
