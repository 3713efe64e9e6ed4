"""The msgpack codec: round trips, wire sizes, and garbage in, ``DecodeError`` out.

Receivers count and drop bad messages by catching ``DecodeError``; any other
exception escaping ``decode`` is a crash on input a peer (or an attacker with
publish rights) controls. The fuzz tests hold the codec to that.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from protocol import admin, messages
from protocol.classes import ClassSchema
from protocol.codec import (
    KINDS,
    MAX_MESSAGE_BYTES,
    VERSION,
    decode,
    decode_any,
    decode_resources,
    encode,
    encode_heartbeat,
    encode_resources,
    encode_status,
)
from protocol.errors import DecodeError
from protocol.gitrepos import GitCredentials, GitRepoSpec, GitRepoStatus
from protocol.messages import WireMessage
from protocol.models import BundleResource, BundleSpec, ClusterGroup, DeploymentOptions
from protocol.states import State

DEPLOYMENT_ID = "s-" + "3f" * 32 + ":0123456789abcdef"
CONDITION = messages.ResourceCondition(
    kind="Deployment", name="web", namespace="apps", api_version="apps/v1", reason="0/3 ready"
)
BUNDLE_STATUS = messages.BundleStatus(
    bundle="web",
    deployment_id=DEPLOYMENT_ID,
    state=State.NOT_READY,
    message="waiting for rollout",
    non_ready=(CONDITION,),
    modified=(messages.ResourceCondition(kind="ConfigMap", name="web-config"),),
)
GROUP = ClusterGroup.model_validate(
    {
        "name": "edge",
        "selector": {
            "matchLabels": {"tier": "edge"},
            "matchExpressions": [{"key": "region", "operator": "NotIn", "values": ["us"]}],
        },
        "labels": {"owner": "ops"},
    }
)
SPEC = BundleSpec.model_validate(
    {
        "name": "web",
        "options": {"defaultNamespace": "apps", "correctDrift": True},
        "targets": [
            {"clusterName": "c1", "doNotDeploy": True},
            {"clusterSelector": {"matchLabels": {"env": "prod"}}, "namespace": "prod"},
            {"clusterGroup": "edge", "force": True},
            {"clusterGroupSelector": {"matchLabels": {"owner": "ops"}}},
            {"clusterSelector": {}},
        ],
    }
)
BUNDLE_SUMMARY = admin.BundleSummary(
    name="web",
    deployment_id=DEPLOYMENT_ID,
    deployment_ids=(DEPLOYMENT_ID, "s-" + "00" * 32 + ":fedcba9876543210"),
    targeted=1000,
    states={State.READY: 990, State.ERR_APPLIED: 10},
    updated_at=1767225600.5,
)
CLUSTER_SUMMARY = admin.ClusterSummary(
    id="7f3c",
    name="edge-1",
    labels={"env": "prod", "example.com/rack": "r7"},
    class_id="0123456789abcdef",
    bundles={"web": State.READY, "db": State.MODIFIED},
    offline=True,
    last_seen=1767225600.25,
)

CLUSTER_LIVE = admin.ClusterLive(
    reported={"web": (DEPLOYMENT_ID, State.NOT_READY)}, offline=True, last_seen=1767225600.5
)

GITREPO = GitRepoSpec(
    name="site",
    repo="https://git.example.com/ops/site.git",
    branch="main",
    paths=("apps/web", "apps/db"),
    polling_interval=30.0,
    targets=SPEC.targets,
    auth_secret="deploy",
)
GITREPO_BUNDLE = admin.GitRepoBundle(
    name="site-web", deployment_id=DEPLOYMENT_ID, targeted=3, ready=2, states={State.READY: 2}
)
GITREPO_INFO = admin.GitRepoInfo(
    spec=GITREPO,
    generation=2,
    status=GitRepoStatus(
        commit="a" * 40,
        deployed_commit="b" * 40,
        bundles=("site-web",),
        error="apps/db/db.yaml: not YAML",
        error_commit="a" * 40,
    ),
    bundles=(GITREPO_BUNDLE,),
)
GIT_SECRET_INFO = admin.GitSecretInfo(
    name="deploy", kind="basic-auth", username="git", used_by=("site",)
)

EXAMPLES: dict[str, WireMessage] = {
    "schema": messages.SchemaMessage(
        class_schema=ClassSchema(epoch=4, keys={"@name": ("c1",), "env": ("dev", "prod")})
    ),
    "desired": messages.DesiredBundle(
        bundle="web",
        rev=12,
        deployment_id=DEPLOYMENT_ID,
        options=DeploymentOptions(namespace="apps", force=True),
        deleted=True,
    ),
    "resource": CONDITION,
    "bundle_status": BUNDLE_STATUS,
    "status": messages.StatusReport(seq=7, sent_at=1767225600.125, bundles=(BUNDLE_STATUS,)),
    "hb": messages.Heartbeat(seq=99, status_seq=7),
    "register": messages.RegisterRequest(
        token="tok", name="edge-1", labels={"env": "prod"}, annotations={"note": "a b c"}
    ),
    "registered": messages.RegisterReply(cluster_id="7f3c", secret="s3cret", shard=3),
    "hello": messages.HelloRequest(secret="s3cret", labels={"env": "dev"}, annotations={"a": "b"}),
    "hello_ok": messages.HelloReply(name="edge-1", shard=3),
    "error": messages.ErrorReply(code="not_found", error="no bundle 'web'"),
    "token_create": admin.TokenCreate(ttl_seconds=3600.0, description="lab rack 7"),
    "token_created": admin.TokenCreated(token="tok", expires_at=1767229200.0),
    "bundle_apply": admin.BundleApply(spec=SPEC, manifest_id="s-" + "3f" * 32),
    "bundle_applied": admin.BundleApplied(
        name="web",
        manifest_id="s-" + "3f" * 32,
        changed=True,
        deployment_ids=(DEPLOYMENT_ID,),
        published=5,
    ),
    "bundle_delete": admin.BundleDelete(name="web"),
    "bundle_deleted": admin.BundleDeleted(name="web", published=5),
    "bundle_list": admin.BundleList(),
    "bundle_summary": BUNDLE_SUMMARY,
    "bundle_list_reply": admin.BundleListReply(bundles=(BUNDLE_SUMMARY,)),
    "cluster_list": admin.ClusterList(),
    "cluster_summary": CLUSTER_SUMMARY,
    "cluster_list_reply": admin.ClusterListReply(clusters=(CLUSTER_SUMMARY,)),
    "group_set": admin.GroupSet(group=GROUP),
    "group_delete": admin.GroupDelete(name="edge"),
    "group_list": admin.GroupList(),
    "group_list_reply": admin.GroupListReply(groups=(GROUP, ClusterGroup(name="all"))),
    "stats": admin.Stats(),
    "stats_reply": admin.StatsReply(counters={"heartbeat_ingested": 12, "status_dropped": 0}),
    "ok": admin.Ok(),
    "shard_summary_request": admin.ShardSummaryRequest(with_clusters=True),
    "cluster_live": CLUSTER_LIVE,
    "shard_summary": admin.ShardSummary(
        replica="cp-1",
        shards=(0, 3),
        counts={
            "web": (
                ("0123456789abcdef", DEPLOYMENT_ID, State.READY, 12),
                ("0123456789abcdef", DEPLOYMENT_ID, State.MODIFIED, 1),
            )
        },
        class_offline={"0123456789abcdef": 2},
        clusters={"7f3c": CLUSTER_LIVE},
    ),
    "gitrepo_set": admin.GitRepoSet(spec=GITREPO),
    "gitrepo_set_reply": admin.GitRepoSetReply(name="site", generation=2, changed=True),
    "gitrepo_delete": admin.GitRepoDelete(name="site"),
    "gitrepo_deleted": admin.GitRepoDeleted(name="site", bundles=("site-web",)),
    "gitrepo_list": admin.GitRepoList(name="site"),
    "gitrepo_bundle": GITREPO_BUNDLE,
    "gitrepo_info": GITREPO_INFO,
    "gitrepo_list_reply": admin.GitRepoListReply(repos=(GITREPO_INFO,)),
    "git_secret_set": admin.GitSecretSet(
        name="deploy", credentials=GitCredentials(username="git", password="tok")
    ),
    "git_secret_delete": admin.GitSecretDelete(name="deploy"),
    "git_secret_list": admin.GitSecretList(),
    "git_secret_info": GIT_SECRET_INFO,
    "git_secret_list_reply": admin.GitSecretListReply(secrets=(GIT_SECRET_INFO,)),
    "git_poll": admin.GitPoll(names=("site", "apps")),
}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_every_kind_has_an_example() -> None:
    assert set(EXAMPLES) == set(KINDS)
    for kind, example in EXAMPLES.items():
        assert type(example) is KINDS[kind]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_round_trip(kind: str) -> None:
    message = EXAMPLES[kind]

    data = encode(message)

    assert decode_any(data) == message
    assert decode(data, type(message)) == message
    assert msgpack.unpackb(data)[:2] == [VERSION, kind]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decoding_into_another_kind_is_refused(kind: str) -> None:
    data = encode(EXAMPLES[kind])
    other = KINDS["hb"] if kind != "hb" else KINDS["status"]

    with pytest.raises(DecodeError, match=repr(kind)) as info:
        decode(data, other)

    assert info.value.kind == other.KIND


def test_the_selector_that_matches_everything_survives_the_wire() -> None:
    # `clusterSelector: {}` (every cluster) and no selector (no cluster) must stay apart.
    decoded = decode(encode(EXAMPLES["bundle_apply"]), admin.BundleApply)

    assert decoded.spec.targets[-1].cluster_selector is not None
    assert decoded.spec.targets[0].cluster_selector is None
    assert decoded.spec.resolve(cluster_name="cx", labels={}, groups={}) == DeploymentOptions(
        default_namespace="apps", correct_drift=True
    )


def test_fields_at_their_defaults_are_not_sent() -> None:
    payload = msgpack.unpackb(encode(messages.DesiredBundle(bundle="web", rev=1)))[2]

    assert payload == {"bundle": "web", "rev": 1}


def test_options_travel_in_fleet_spelling() -> None:
    message = messages.DesiredBundle(
        bundle="web", rev=1, options=DeploymentOptions(correct_drift=True)
    )

    assert msgpack.unpackb(encode(message))[2]["options"] == {"correctDrift": True}


def test_unknown_fields_from_a_newer_peer_are_ignored() -> None:
    data = pack([VERSION, "hb", {"seq": 5, "status_seq": 2, "load": 0.5}])

    assert decode(data, messages.Heartbeat) == messages.Heartbeat(seq=5, status_seq=2)


def test_heartbeat_fits_in_64_bytes() -> None:
    largest = messages.Heartbeat(seq=2**64 - 1, status_seq=2**64 - 1)

    assert len(encode(largest)) <= 64


def test_desired_bundle_fits_in_256_bytes() -> None:
    message = messages.DesiredBundle(bundle="b" * 63, rev=2**63 - 1, deployment_id=DEPLOYMENT_ID)

    assert len(encode(message)) <= 256


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (pack([2, "hb", {"seq": 1}]), "unsupported message version 2"),
        (pack([0, "hb", {"seq": 1}]), "unsupported message version 0"),
        (pack(["1", "hb", {"seq": 1}]), "unsupported message version '1'"),
        (pack([VERSION, "nope", {}]), "unknown message kind 'nope'"),
        (pack([VERSION, b"hb", {"seq": 1}]), "unknown message kind"),
        (pack([VERSION, "hb", [1]]), "not a map"),
        (pack([VERSION, "hb"]), "want [version, kind, payload]"),
        (pack([VERSION, "hb", {"seq": 1}, "extra"]), "want [version, kind, payload]"),
        (pack({"v": 1}), "want [version, kind, payload]"),
        (pack([VERSION, "hb", {"seq": "many"}]), "invalid 'hb' message"),
        (pack([VERSION, "hb", {}]), "invalid 'hb' message"),
        (pack([VERSION, "hb", {1: 2}]), "not msgpack"),
        (b"", "not msgpack"),
        (b"\xc1", "not msgpack"),
        (encode(messages.Heartbeat(seq=1)) + b"\x00", "not msgpack"),
        (encode(messages.Heartbeat(seq=1))[:-1], "not msgpack"),
    ],
)
def test_bad_messages_raise_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_any(data)

    assert message in str(info.value)


def test_decode_error_names_the_kind_that_failed() -> None:
    with pytest.raises(DecodeError) as info:
        decode_any(pack([VERSION, "status", {"seq": 1}]))

    assert info.value.kind == "status"
    assert "sent_at" in str(info.value)


def test_not_bytes_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        decode_any("hello")  # type: ignore[arg-type]


def test_oversized_message_is_refused_before_unpacking() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        decode_any(b"\x00" * (MAX_MESSAGE_BYTES + 1))


def test_memoryview_is_accepted() -> None:
    message = messages.Heartbeat(seq=1)

    assert decode_any(memoryview(encode(message))) == message  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\xc1", "not msgpack"),
        (pack({"a.yaml": "x"}), "not a list"),
        (pack("a.yaml"), "not a list"),
        (pack([["a.yaml"]]), "not [name, content]"),
        (pack([["a.yaml", "x", "y"]]), "not [name, content]"),
        (pack([["a.yaml", b"x"]]), "not [name, content]"),
        (pack([[1, "x"]]), "not [name, content]"),
        (pack(["a.yaml"]), "not [name, content]"),
        (b"\x00" * (MAX_MESSAGE_BYTES + 1), "exceeds"),
    ],
)
def test_bad_resource_blobs_raise_decode_error(blob: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_resources(blob)

    assert message in str(info.value)


def test_resource_blob_round_trip() -> None:
    resources = [BundleResource(name="b.yaml", content="y"), BundleResource(name="a", content="")]

    assert decode_resources(encode_resources(resources)) == sorted(resources, key=lambda r: r.name)
    assert decode_resources(encode_resources([])) == []


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("bundle_apply", {"spec": {"name": "Not_A_DNS_Label"}, "manifest_id": "s-0"}),
        ("group_set", {"group": {"name": "g", "selector": {"matchLabels": {"-x": "y"}}}}),
        (
            "group_list_reply",
            {
                "groups": [
                    {
                        "name": "g",
                        "selector": {
                            "matchExpressions": [{"key": "bad key", "operator": "Exists"}]
                        },
                    }
                ]
            },
        ),
    ],
)
def test_invalid_names_inside_a_message_are_decode_errors(
    kind: str, payload: dict[str, Any]
) -> None:
    # Name validators run deep inside validation; what they raise must still
    # come out as the one error receivers catch.
    with pytest.raises(DecodeError) as info:
        decode_any(pack([VERSION, kind, payload]))

    assert info.value.kind == kind


# --- fuzz -------------------------------------------------------------------------------


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """Every field name and alias a model reads, through nested models."""
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        if field.alias:
            names.add(field.alias)
        pending: list[Any] = [field.annotation]
        while pending:
            annotation = pending.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                names |= _field_names(annotation, seen)
            pending.extend(getattr(annotation, "__args__", ()))
    return names


FIELD_NAMES = sorted(set().union(*(_field_names(cls, set()) for cls in KINDS.values())))

map_keys = st.one_of(
    st.sampled_from(FIELD_NAMES),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.integers(-2, 2),
)
# Random text plus a fuzzing dictionary of strings that break names, labels and subjects.
tricky_text = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["-x", "x-", "a b", "A_", "a.b.", "*", ">", "a/b/c", "é", "x\n", "\x00"]),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["In", "NotIn", "Exists", "Ready", "prod", "", "web", "-x"]),
    st.binary(max_size=8),
)
structures = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(map_keys, children, max_size=4),
    ),
    max_leaves=16,
)


def assert_decodes_cleanly(data: bytes) -> None:
    """``decode_any`` and ``decode`` raise DecodeError or return a model that re-encodes."""
    try:
        message = decode_any(data)
    except DecodeError:
        message = None
    if message is not None:
        assert isinstance(message, KINDS[message.KIND])
        assert encode(decode_any(encode(message))) == encode(message)
    for cls in KINDS.values():
        if message is not None and cls is type(message):
            assert decode(data, cls) == message
        else:
            with pytest.raises(DecodeError):
                decode(data, cls)


def assert_resources_decode_cleanly(data: bytes) -> None:
    try:
        resources = decode_resources(data)
    except DecodeError:
        return
    assert all(isinstance(r, BundleResource) for r in resources)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes(data: bytes) -> None:
    assert_decodes_cleanly(data)
    assert_resources_decode_cleanly(data)


@FUZZ
@given(structures)
def test_random_msgpack_structures(obj: Any) -> None:
    data = pack(obj)

    assert_decodes_cleanly(data)
    assert_resources_decode_cleanly(data)


@FUZZ
@given(st.sampled_from([*KINDS, "", "HB"]), structures, structures)
def test_random_message_envelopes(kind: str, version: Any, payload: Any) -> None:
    assert_decodes_cleanly(pack([version, kind, payload]))
    assert_decodes_cleanly(pack([VERSION, kind, payload]))


@FUZZ
@given(st.lists(st.lists(structures, max_size=3), max_size=3))
def test_random_resource_blobs(obj: Any) -> None:
    assert_resources_decode_cleanly(pack(obj))


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out.extend(_paths(value, (*prefix, index)))
    return out


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        obj = obj[step]
    return obj


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    if isinstance(obj, dict):
        return {**obj, head: _replace(obj[head], tuple(rest), value)}
    copy = list(obj)
    copy[head] = _replace(obj[head], tuple(rest), value)
    return copy


def _delete_or_rename(obj: Any, path: tuple[Any, ...], new_key: Any) -> Any:
    """Drop the dict entry at ``path``, re-adding it under ``new_key`` unless None."""
    *parent_path, key = path
    parent = _get(obj, tuple(parent_path))
    if not isinstance(parent, dict):
        return _replace(obj, path, new_key)
    changed = {k: v for k, v in parent.items() if k != key}
    if new_key is not None:
        changed[new_key] = parent[key]
    return _replace(obj, tuple(parent_path), changed)


@st.composite
def mutated_payloads(draw: st.DrawFn, kind: str) -> Any:
    """A valid payload of ``kind`` with a few parts replaced, renamed or dropped."""
    payload = msgpack.unpackb(encode(EXAMPLES[kind]))[2]
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(payload)
        strings = [p for p in paths if isinstance(_get(payload, p), str)]
        match draw(st.sampled_from(["string", "replace", "rename"])):
            case "string" if strings:
                # Names, labels and enums live in strings; most random text breaks them.
                path = draw(st.sampled_from(strings))
                payload = _replace(payload, path, draw(tricky_text))
            case "rename" if len(paths) > 1:
                path = draw(st.sampled_from(paths[1:]))
                payload = _delete_or_rename(payload, path, draw(st.none() | map_keys))
            case _:
                path = draw(st.sampled_from(paths))
                payload = _replace(payload, path, draw(structures))
    return payload


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_payloads_of_every_kind(kind: str, data: st.DataObject) -> None:
    payload = data.draw(
        st.one_of(mutated_payloads(kind), st.dictionaries(map_keys, structures, max_size=6))
    )

    assert_decodes_cleanly(pack([VERSION, kind, payload]))


@given(st.integers(min_value=0, max_value=2**63 - 1), st.integers(min_value=0, max_value=2**63 - 1))
def test_the_heartbeat_fast_path_is_byte_for_byte_the_model(seq: int, status_seq: int) -> None:
    fast = encode_heartbeat(seq, status_seq)
    assert fast == encode(messages.Heartbeat(seq=seq, status_seq=status_seq))
    assert decode(fast, messages.Heartbeat) == messages.Heartbeat(seq=seq, status_seq=status_seq)
    assert len(encode_heartbeat(1_795_000_000_000, 1_795_000_000_000)) <= 64


conditions = st.builds(
    messages.ResourceCondition,
    kind=st.text(max_size=8),
    name=st.text(max_size=8),
    namespace=st.text(max_size=8),
    api_version=st.text(max_size=8),
    reason=st.text(max_size=8),
)
bundle_statuses = st.builds(
    messages.BundleStatus,
    bundle=st.text(max_size=8),
    deployment_id=st.text(max_size=8),
    state=st.sampled_from(State),
    message=st.text(max_size=8),
    non_ready=st.lists(conditions, max_size=2).map(tuple),
    modified=st.lists(conditions, max_size=2).map(tuple),
)


@given(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.floats(allow_nan=False) | st.integers(min_value=-(2**53), max_value=2**53),
    st.lists(bundle_statuses, max_size=3).map(tuple),
)
def test_the_status_fast_path_is_byte_for_byte_the_model(
    seq: int, sent_at: float, bundles: tuple[messages.BundleStatus, ...]
) -> None:
    report = messages.StatusReport(seq=seq, sent_at=sent_at, bundles=bundles)
    fast = encode_status(seq, sent_at, bundles)
    assert fast == encode(report)
    assert decode(fast, messages.StatusReport) == report


def test_the_hand_encoders_know_every_field_of_their_models() -> None:
    # A field added to one of these models must be added to its encoder in
    # protocol.codec too: the byte-for-byte tests above only draw known fields.
    assert set(messages.ResourceCondition.model_fields) == {
        "kind",
        "name",
        "namespace",
        "api_version",
        "reason",
    }
    assert set(messages.BundleStatus.model_fields) == {
        "bundle",
        "deployment_id",
        "state",
        "message",
        "non_ready",
        "modified",
    }
    assert set(messages.StatusReport.model_fields) == {"seq", "sent_at", "bundles"}
    assert set(messages.Heartbeat.model_fields) == {"seq", "status_seq"}
