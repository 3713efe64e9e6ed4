"""Label classes: clusters no target can tell apart share one class.

The control plane evaluates targets once per class, on the class's
representative labels, instead of once per cluster. That is only correct if
every target gives the same answer on the representative as on each member;
the property tests below hold the projection to that.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import subjects
from protocol.classes import (
    NAME_KEY,
    OTHER_VALUE,
    ClassSchema,
    class_id,
    class_labels,
    class_of,
    project,
    representative_labels,
    representative_name,
    schema_from_selectors,
)
from protocol.models import BundleSpec, BundleTarget, ClusterGroup
from protocol.selectors import LabelSelector, Operator, Requirement, parse_selector

SELECTORS = [parse_selector("env=prod"), parse_selector("region in (eu,us),!canary")]
SCHEMA = schema_from_selectors(SELECTORS, epoch=1)


def test_schema_lists_the_keys_and_values_selectors_read() -> None:
    assert SCHEMA.keys == {"canary": (), "env": ("prod",), "region": ("eu", "us")}
    assert SCHEMA.epoch == 1


def test_schema_does_not_depend_on_selector_order() -> None:
    # Class IDs are derived from the schema; a restart must not renumber classes.
    forward = schema_from_selectors(SELECTORS, names=["b", "a"], epoch=1)
    backward = schema_from_selectors(list(reversed(SELECTORS)), names=["a", "b"], epoch=1)

    assert list(forward.keys.items()) == list(backward.keys.items())
    assert class_of("a", {"env": "prod"}, forward) == class_of("a", {"env": "prod"}, backward)


def test_labels_no_selector_reads_do_not_split_a_class() -> None:
    one = class_of("c1", {"env": "prod", "region": "eu", "rack": "7", "owner": "ann"}, SCHEMA)
    other = class_of("c2", {"env": "prod", "region": "eu", "hw": "arm"}, SCHEMA)

    assert one == other


def test_values_no_selector_mentions_share_a_class() -> None:
    assert class_of("c1", {"env": "dev"}, SCHEMA) == class_of("c2", {"env": "qa"}, SCHEMA)
    assert project({"env": "dev"}, SCHEMA) == (
        ("canary", None),
        ("env", OTHER_VALUE),
        ("region", None),
    )


def test_mentioned_values_and_absence_split_classes() -> None:
    classes = {
        class_of("c", labels, SCHEMA)
        for labels in [
            {"env": "prod"},
            {"env": "dev"},
            {},
            {"env": "prod", "region": "eu"},
            {"env": "prod", "region": "us"},
            {"env": "prod", "canary": "true"},
        ]
    }

    assert len(classes) == 6


def test_any_canary_value_is_one_class_since_only_presence_is_read() -> None:
    assert class_of("c1", {"canary": "a"}, SCHEMA) == class_of("c2", {"canary": "b"}, SCHEMA)


def test_clusters_named_by_a_target_get_a_class_of_their_own() -> None:
    schema = schema_from_selectors(SELECTORS, names=["c1"], epoch=1)
    labels = {"env": "prod"}

    assert class_of("c1", labels, schema) != class_of("c2", labels, schema)
    assert class_of("c2", labels, schema) == class_of("c3", labels, schema)

    named = project(class_labels("c1", labels), schema)
    unnamed = project(class_labels("c2", labels), schema)
    assert representative_name(named) == "c1"
    assert representative_name(unnamed) is None
    assert representative_labels(named) == labels
    assert NAME_KEY not in representative_labels(named)


def test_without_named_targets_the_name_does_not_matter() -> None:
    assert NAME_KEY not in SCHEMA.keys
    assert class_of("c1", {"env": "prod"}, SCHEMA) == class_of("c2", {"env": "prod"}, SCHEMA)


def test_class_id_is_a_short_subject_token() -> None:
    cid = class_of("c1", {"env": "prod"}, SCHEMA)

    assert len(cid) == 16
    assert subjects.desired(cid, "web").split(".")[3] == cid


def test_empty_schema_puts_every_cluster_in_one_class() -> None:
    empty = schema_from_selectors([], epoch=0)

    assert class_of("c1", {"env": "prod"}, empty) == class_of("c2", {}, empty)
    assert class_id(()) == class_of("c3", {"x": "y"}, empty)


def test_same_keys_ignores_the_epoch() -> None:
    assert SCHEMA.same_keys(schema_from_selectors(SELECTORS, epoch=7))
    assert not SCHEMA.same_keys(schema_from_selectors(SELECTORS[:1], epoch=1))
    assert ClassSchema().same_keys(ClassSchema(epoch=3))


# --- properties -------------------------------------------------------------------------

KEYS = ["env", "region", "tier"]
VALUES = ["a", "b", "c"]
# Labels also carry values and keys that no selector can mention.
LABEL_KEYS = [*KEYS, "rack"]
LABEL_VALUES = [*VALUES, "d", ""]
NAMES = ["c1", "c2", "c3"]

requirements = st.one_of(
    st.builds(
        Requirement,
        key=st.sampled_from(KEYS),
        operator=st.sampled_from([Operator.IN, Operator.NOT_IN]),
        values=st.lists(st.sampled_from(VALUES), min_size=1, max_size=2).map(tuple),
    ),
    st.builds(
        Requirement,
        key=st.sampled_from(KEYS),
        operator=st.sampled_from([Operator.EXISTS, Operator.DOES_NOT_EXIST]),
    ),
)
selectors = st.builds(
    LabelSelector,
    match_labels=st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2),
    match_expressions=st.lists(requirements, max_size=3).map(tuple),
)
label_sets = st.dictionaries(
    st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=len(LABEL_KEYS)
)
groups = st.lists(
    st.builds(
        ClusterGroup,
        name=st.sampled_from(["g1", "g2", "g3"]),
        selector=selectors,
        labels=st.dictionaries(st.just("zone"), st.sampled_from(VALUES), max_size=1),
    ),
    max_size=3,
).map(lambda gs: {g.name: g for g in gs})


@st.composite
def targets(draw: st.DrawFn) -> BundleTarget:
    fields: dict[str, Any] = {
        "cluster_selector": draw(st.none() | selectors),
        "cluster_name": draw(st.sampled_from(["", *NAMES])),
        "cluster_group": draw(st.sampled_from(["", "g1", "g2", "missing"])),
        "cluster_group_selector": draw(
            st.none() | st.builds(LabelSelector, match_labels=st.just({"zone": "a"})) | selectors
        ),
        "do_not_deploy": draw(st.booleans()),
        "namespace": draw(st.sampled_from([None, "n1", "n2"])),
    }
    return BundleTarget(**fields)


@settings(max_examples=200)
@given(st.lists(selectors, min_size=1, max_size=4), label_sets)
def test_selectors_agree_on_full_and_representative_labels(
    selector_list: list[LabelSelector], labels: dict[str, str]
) -> None:
    schema = schema_from_selectors(selector_list, epoch=1)
    representative = representative_labels(project(labels, schema))

    for selector in selector_list:
        assert selector.matches(representative) == selector.matches(labels)


@settings(max_examples=200)
@given(
    st.lists(targets(), max_size=4),
    groups,
    st.sampled_from(NAMES),
    label_sets,
)
def test_targets_resolve_the_same_on_a_class_as_on_its_clusters(
    target_list: list[BundleTarget],
    group_map: dict[str, ClusterGroup],
    name: str,
    labels: dict[str, str],
) -> None:
    bundle = BundleSpec(name="web", targets=tuple(target_list))
    selector_list = [
        *(s for t in bundle.targets for s in t.selectors(group_map)),
        *(g.selector for g in group_map.values()),
    ]
    schema = schema_from_selectors(selector_list, names=bundle.names_targeted(), epoch=1)
    projection = project(class_labels(name, labels), schema)

    on_class = bundle.resolve(
        cluster_name=representative_name(projection),
        labels=representative_labels(projection),
        groups=group_map,
    )
    on_cluster = bundle.resolve(cluster_name=name, labels=labels, groups=group_map)

    assert on_class == on_cluster


@settings(max_examples=200)
@given(
    st.lists(selectors, min_size=1, max_size=4),
    label_sets,
    st.lists(st.sampled_from(["d", "", "zzz"]), min_size=len(LABEL_KEYS), max_size=len(LABEL_KEYS)),
    st.dictionaries(st.sampled_from(["hw", "owner"]), st.sampled_from(VALUES), max_size=2),
)
def test_changing_what_no_selector_reads_keeps_the_class(
    selector_list: list[LabelSelector],
    labels: dict[str, str],
    replacements: list[str],
    extra: dict[str, str],
) -> None:
    schema = schema_from_selectors(selector_list, names=["c1"], epoch=1)
    other = dict(extra)
    for key, replacement in zip(LABEL_KEYS, replacements, strict=True):
        if key not in labels:
            continue
        mentioned = key in schema.keys and labels[key] in schema.keys[key]
        other[key] = labels[key] if mentioned else replacement

    assert class_of("c2", labels, schema) == class_of("c3", other, schema)
    assert class_of("c2", labels, schema) != class_of("c1", labels, schema)
    for selector in selector_list:
        assert selector.matches(labels) == selector.matches(other)
