"""NATS subject names: the layout that NATS permissions and subscriptions rely on.

A builder that lets a '.', '*' or '>' into a token changes which subscribers
see a message (or which permission allows it), so the builders refuse them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import subjects
from protocol.errors import DecodeError


def nats_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: '*' is one token, a final '>' is one or more."""
    pattern_tokens = pattern.split(".")
    subject_tokens = subject.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens) or token not in ("*", subject_tokens[index]):
            return False
    return len(subject_tokens) == len(pattern_tokens)


def test_documented_subjects() -> None:
    assert subjects.SCHEMA == "shoal.v1.schema"
    assert subjects.REGISTER == "shoal.v1.register"
    assert subjects.desired("0123abcd", "web") == "shoal.v1.desired.0123abcd.web"
    assert subjects.desired_class("0123abcd") == "shoal.v1.desired.0123abcd.*"
    assert subjects.cluster_desired("c-1", "web") == "shoal.v1.cluster.c-1.desired.web"
    assert subjects.cluster_desired_all("c-1") == "shoal.v1.cluster.c-1.desired.*"
    assert subjects.cluster_all("c-1") == "shoal.v1.cluster.c-1.>"
    assert subjects.status(3, "c-1") == "shoal.v1.status.3.c-1"
    assert subjects.status_shard(3) == "shoal.v1.status.3.*"
    assert subjects.heartbeat(3, "c-1") == "shoal.v1.hb.3.c-1"
    assert subjects.heartbeat_shard(3) == "shoal.v1.hb.3.*"
    assert subjects.hello("c-1") == "shoal.v1.agent.c-1.hello"
    assert subjects.admin("bundle.apply") == "shoal.v1.admin.bundle.apply"


def test_an_agent_subscription_sees_its_class_and_its_own_cluster_only() -> None:
    desired = subjects.desired("class1", "web")
    override = subjects.cluster_desired("c1", "web")

    assert nats_matches(subjects.desired_class("class1"), desired)
    assert not nats_matches(subjects.desired_class("class2"), desired)
    assert nats_matches(subjects.cluster_all("c1"), override)
    assert nats_matches(subjects.cluster_desired_all("c1"), override)
    assert not nats_matches(subjects.cluster_desired_all("c2"), override)
    assert not nats_matches(subjects.cluster_all("c2"), override)
    assert not nats_matches(subjects.cluster_all("c1"), desired)


def test_stream_subjects_cover_what_is_published_on_them() -> None:
    assert nats_matches(subjects.DESIRED_ALL, subjects.desired("class1", "web"))
    assert nats_matches(subjects.CLUSTER_DESIRED_ALL, subjects.cluster_desired("c1", "web"))
    assert not nats_matches(subjects.DESIRED_ALL, subjects.cluster_desired("c1", "web"))
    assert not nats_matches(subjects.CLUSTER_DESIRED_ALL, subjects.desired("class1", "web"))
    assert nats_matches(subjects.STATUS_ALL, subjects.status(0, "c1"))
    assert nats_matches(subjects.HEARTBEAT_ALL, subjects.heartbeat(0, "c1"))
    assert not nats_matches(subjects.STATUS_ALL, subjects.heartbeat(0, "c1"))


def test_shard_subscriptions_see_their_shard_only() -> None:
    assert nats_matches(subjects.status_shard(3), subjects.status(3, "c1"))
    assert not nats_matches(subjects.status_shard(3), subjects.status(4, "c1"))
    assert nats_matches(subjects.heartbeat_shard(3), subjects.heartbeat(3, "c1"))
    assert not nats_matches(subjects.heartbeat_shard(3), subjects.heartbeat(31, "c1"))


def test_admin_subscription_covers_every_operation() -> None:
    assert nats_matches(subjects.admin(">"), subjects.admin("bundle.apply"))
    assert nats_matches(subjects.admin(">"), subjects.admin("stats"))


BUILDERS: dict[str, Callable[[str], str]] = {
    "desired class": lambda token: subjects.desired(token, "web"),
    "desired bundle": lambda token: subjects.desired("class1", token),
    "desired_class": subjects.desired_class,
    "cluster_desired cluster": lambda token: subjects.cluster_desired(token, "web"),
    "cluster_desired bundle": lambda token: subjects.cluster_desired("c1", token),
    "cluster_desired_all": subjects.cluster_desired_all,
    "cluster_all": subjects.cluster_all,
    "status": lambda token: subjects.status(0, token),
    "heartbeat": lambda token: subjects.heartbeat(0, token),
    "hello": subjects.hello,
}


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
@pytest.mark.parametrize("token", ["a.b", "*", ">", "a*", "a>", "a b", " a", "", "a\tb"])
def test_builders_refuse_tokens_that_change_the_subject(
    builder: Callable[[str], str], token: str
) -> None:
    with pytest.raises(ValueError, match="cannot be a subject token"):
        builder(token)


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
def test_builders_refuse_a_trailing_newline(builder: Callable[[str], str]) -> None:
    # A line break in a subject would end the NATS protocol line early.
    with pytest.raises(ValueError, match="cannot be a subject token"):
        builder("c1\n")


tokens = st.from_regex(r"\A[A-Za-z0-9_-]{1,20}\Z")


@settings(max_examples=100)
@given(st.integers(min_value=0, max_value=10_000), tokens)
def test_parse_cluster_subject_round_trip(shard: int, cluster_id: str) -> None:
    assert subjects.parse_cluster_subject(subjects.status(shard, cluster_id)) == (
        shard,
        cluster_id,
    )
    assert subjects.parse_cluster_subject(subjects.heartbeat(shard, cluster_id)) == (
        shard,
        cluster_id,
    )


@settings(max_examples=100)
@given(tokens, tokens)
def test_parse_desired_subject_round_trip(owner: str, bundle: str) -> None:
    assert subjects.parse_desired_subject(subjects.desired(owner, bundle)) == bundle
    assert subjects.parse_desired_subject(subjects.cluster_desired(owner, bundle)) == bundle


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "garbage",
        "shoal.v1.hb.3",
        "shoal.v1.hb.3.c1.extra",
        "shoal.v2.hb.3.c1",
        "other.v1.hb.3.c1",
        "shoal.v1.desired.3.c1",
        "shoal.v1.hb.x.c1",
        "shoal.v1.hb.-1.c1",
        "shoal.v1.hb..c1",
        "shoal.v1.status.3.",
        "shoal.v1.status.3.c*",
        "shoal.v1.status.3.>",
        "shoal.v1.status.3.c 1",
        "shoal.v1.status.3.c1\n",
        "shoal.v1.status.3\n.c1",
    ],
)
def test_parse_cluster_subject_rejects_garbage(subject: str) -> None:
    with pytest.raises(DecodeError):
        subjects.parse_cluster_subject(subject)


@pytest.mark.parametrize("shard", ["\u00b2", "\u0663", "\uff13"])
def test_parse_cluster_subject_rejects_non_ascii_digits(shard: str) -> None:
    # The ingest handler catches DecodeError only; anything else would escape it.
    with pytest.raises(DecodeError):
        subjects.parse_cluster_subject(f"shoal.v1.hb.{shard}.c1")


@pytest.mark.parametrize("subject", ["", "shoal.v1.desired.class1.", "shoal.v1.desired.c.a b"])
def test_parse_desired_subject_rejects_garbage(subject: str) -> None:
    with pytest.raises(DecodeError):
        subjects.parse_desired_subject(subject)
