"""Manifest and deployment IDs: content digests both sides must agree on.

Same content must give the same IDs on every machine and every run (an
unchanged re-apply publishes nothing), and any change of content or options
must give a new ID (or agents would keep running the old one).
"""

from __future__ import annotations

import hashlib
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import decode_resources, encode_resources
from protocol.ids import (
    MANIFEST_PREFIX,
    canonical_resources,
    deployment_id,
    manifest_id,
    manifest_id_of_blob,
    manifest_of,
)
from protocol.models import BundleResource, DeploymentOptions

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: '1'\n"
DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
RESOURCES = [
    BundleResource(name="configmap.yaml", content=CONFIGMAP),
    BundleResource(name="deployment.yaml", content=DEPLOYMENT),
    BundleResource(name="sub/values.yaml", content="replicas: 2\n"),
]

resources_lists = st.lists(
    st.builds(BundleResource, name=st.text(max_size=20), content=st.text(max_size=50)),
    max_size=5,
)


def test_manifest_id_is_the_sha256_of_the_sorted_name_content_pairs() -> None:
    # The encoding is the blob store's key; changing it re-deploys every bundle.
    pairs = sorted([r.name, r.content] for r in RESOURCES)
    expected = hashlib.sha256(msgpack.packb(pairs, use_bin_type=True)).hexdigest()

    assert manifest_id(RESOURCES) == MANIFEST_PREFIX + expected
    assert manifest_id([]) == (
        "s-" + "9e076ceaf246b6003d9c2680a2b4cf0bffd069805902b0b5edeebf49039fe4bd"
    )


@settings(max_examples=50)
@given(resources_lists, st.randoms(use_true_random=False))
def test_resource_order_does_not_change_ids(
    resources: list[BundleResource], rng: random.Random
) -> None:
    shuffled = list(resources)
    rng.shuffle(shuffled)
    options = DeploymentOptions(namespace="apps")

    assert manifest_id(shuffled) == manifest_id(resources)
    assert deployment_id(manifest_id(shuffled), options) == deployment_id(
        manifest_id(resources), options
    )


@pytest.mark.parametrize(
    "changed",
    [
        [*RESOURCES[:2], BundleResource(name="sub/values.yaml", content="replicas: 3\n")],
        [*RESOURCES[:2], BundleResource(name="sub/other.yaml", content="replicas: 2\n")],
        RESOURCES[:2],
        [*RESOURCES, BundleResource(name="extra.yaml", content="")],
        # Moving text between files is a change even though the bytes are the same.
        [
            BundleResource(name="configmap.yaml", content=CONFIGMAP + DEPLOYMENT),
            BundleResource(name="deployment.yaml", content=""),
            RESOURCES[2],
        ],
    ],
)
def test_changed_content_changes_the_manifest_id(changed: list[BundleResource]) -> None:
    assert manifest_id(changed) != manifest_id(RESOURCES)


@pytest.mark.parametrize(
    "options",
    [
        DeploymentOptions(namespace="apps"),
        DeploymentOptions(default_namespace="apps"),
        DeploymentOptions(correct_drift=True),
        DeploymentOptions(force=True),
        DeploymentOptions(keep_resources=True),
    ],
)
def test_changed_options_change_the_deployment_id(options: DeploymentOptions) -> None:
    manifest = manifest_id(RESOURCES)

    assert deployment_id(manifest, options) != deployment_id(manifest, DeploymentOptions())
    assert manifest_of(deployment_id(manifest, options)) == manifest


def test_namespace_and_default_namespace_give_different_ids() -> None:
    manifest = manifest_id(RESOURCES)

    assert deployment_id(manifest, DeploymentOptions(namespace="x")) != deployment_id(
        manifest, DeploymentOptions(default_namespace="x")
    )


def test_options_spelled_at_their_defaults_give_the_default_id() -> None:
    manifest = manifest_id(RESOURCES)
    explicit = DeploymentOptions.model_validate(
        {"correctDrift": False, "force": False, "keepResources": False, "namespace": None}
    )

    assert deployment_id(manifest, explicit) == deployment_id(manifest, DeploymentOptions())


def test_a_new_option_left_at_its_default_keeps_existing_ids() -> None:
    # Upgrading shoal to a version with more options must not redeploy every bundle.
    class NewerOptions(DeploymentOptions):
        server_side_apply: bool = False

    manifest = manifest_id(RESOURCES)
    older = DeploymentOptions(namespace="apps")
    newer = NewerOptions(namespace="apps")

    assert deployment_id(manifest, newer) == deployment_id(manifest, older)
    assert deployment_id(manifest, NewerOptions(server_side_apply=True)) != deployment_id(
        manifest, DeploymentOptions()
    )


def test_options_set_in_a_different_order_give_the_same_id() -> None:
    manifest = manifest_id(RESOURCES)
    one = DeploymentOptions.model_validate({"force": True, "namespace": "a"})
    other = DeploymentOptions.model_validate({"namespace": "a", "force": True})

    assert deployment_id(manifest, one) == deployment_id(manifest, other)


def test_different_manifests_with_the_same_options_give_different_ids() -> None:
    options = DeploymentOptions(namespace="apps")

    assert deployment_id(manifest_id(RESOURCES), options) != deployment_id(
        manifest_id(RESOURCES[:1]), options
    )


def test_deployment_id_shape() -> None:
    manifest = manifest_id(RESOURCES)
    deployment = deployment_id(manifest, DeploymentOptions())

    head, sep, digest = deployment.partition(":")
    assert (head, sep) == (manifest, ":")
    assert len(digest) == 16
    assert int(digest, 16) >= 0


def test_manifest_of() -> None:
    manifest = manifest_id(RESOURCES)

    assert manifest_of(deployment_id(manifest, DeploymentOptions(force=True))) == manifest
    assert manifest_of(manifest) == manifest


@settings(max_examples=50)
@given(resources_lists)
def test_the_blob_hashes_to_the_manifest_id(resources: list[BundleResource]) -> None:
    blob = encode_resources(resources)

    assert blob == canonical_resources(resources)
    assert manifest_id_of_blob(blob) == manifest_id(resources)


@settings(max_examples=50)
@given(resources_lists)
def test_the_blob_decodes_to_the_resources_sorted_by_name(
    resources: list[BundleResource],
) -> None:
    decoded = decode_resources(encode_resources(resources))

    assert decoded == sorted(resources, key=lambda r: (r.name, r.content))
    assert manifest_id(decoded) == manifest_id(resources)


def test_a_tampered_blob_does_not_hash_to_the_manifest_id() -> None:
    blob = encode_resources(RESOURCES)
    tampered = blob.replace(b"replicas: 2", b"replicas: 9")

    assert tampered != blob
    assert manifest_id_of_blob(tampered) != manifest_id(RESOURCES)
