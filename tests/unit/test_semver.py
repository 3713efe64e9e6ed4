"""Version ranges as Helm users write them in ``helm.version``, picked among a chart's versions."""

from __future__ import annotations

import pytest

from bundles.semver import InvalidVersion, Range, Version, is_exact, pick

PUBLISHED = [
    "0.9.0",
    "1.0.0",
    "1.2.0",
    "1.2.3",
    "1.2.9",
    "1.3.0-rc.1",
    "1.3.0",
    "1.10.1",
    "2.0.0",
    "2.1.0-beta.1",
    "v3.0.0",
    "not-a-version",
]


@pytest.mark.parametrize(
    ("wanted", "picked"),
    [
        ("1.2.3", "1.2.3"),
        ("v1.2.3", "1.2.3"),
        ("=1.2.3", "1.2.3"),
        ("^1.2", "1.10.1"),
        ("^1.2.3", "1.10.1"),
        ("^0.9", "0.9.0"),
        ("~1.2.3", "1.2.9"),
        ("~1.2", "1.2.9"),
        ("~1", "1.10.1"),
        (">=1.0.0 <2.0.0", "1.10.1"),
        (">=1.0.0, <1.3.0", "1.2.9"),
        (">= 1.0.0 < 1.3.0", "1.2.9"),
        ("1.x", "1.10.1"),
        ("1.2.x", "1.2.9"),
        ("1.2", "1.2.9"),
        ("2", "2.0.0"),
        ("*", "v3.0.0"),
        ("", "v3.0.0"),
        ("<1.2", "1.0.0"),
        (">1.2", "v3.0.0"),
        ("<=1.2", "1.2.9"),
        ("1.0 - 1.2.3", "1.2.3"),
        ("^1.0.0 || ^2.0.0", "2.0.0"),
        ("9.9.9", None),
        ("^4", None),
    ],
)
def test_picks_the_highest_admitted_version(wanted: str, picked: str | None) -> None:
    assert pick(PUBLISHED, wanted) == picked


def test_prereleases_only_when_the_range_asks_for_them() -> None:
    assert pick(PUBLISHED, "~1.3") == "1.3.0"
    assert pick(["1.3.0-rc.1"], "~1.3") is None
    assert pick(["1.3.0-rc.1", "1.2.0"], ">=1.3.0-0 <2.0.0") == "1.3.0-rc.1"
    assert pick(PUBLISHED, "^2.0.0-0") == "2.1.0-beta.1"
    assert pick(["1.3.0-rc.1"], "1.3.0-rc.1") == "1.3.0-rc.1"


def test_not_equal_excludes_one_version() -> None:
    assert pick(["1.2.3", "1.2.2"], "!=1.2.3") == "1.2.2"
    assert pick(["1.2.3", "1.1.0"], "!=1.2") == "1.1.0"


def test_semver_precedence() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
    ]
    assert sorted(reversed(ordered), key=Version.parse) == ordered
    assert Version.parse("1.0.0+build.1") == Version.parse("1.0.0")


def test_exact_versions() -> None:
    assert is_exact("1.2.3")
    assert is_exact("1.2.3-rc.1+meta")
    assert not is_exact("1.2")
    assert not is_exact("^1.2.3")
    assert not is_exact("")


@pytest.mark.parametrize("text", ["^", ">=a.b", "1.2.3.4", "~>", ">=1 ||"])
def test_unreadable_ranges_are_refused(text: str) -> None:
    with pytest.raises(InvalidVersion):
        Range.parse(text)
