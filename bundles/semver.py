"""Semantic versions and the version ranges Helm users write in ``helm.version``.

Fleet hands ``helm.version`` to Helm, which reads it as a Masterminds/semver
constraint, so that is the language implemented here, in the part people
use: exact versions (``1.2.3``, also ``v1.2.3``), partial versions as wildcards
(``1.2`` = ``1.2.x``), ``x``/``X``/``*`` wildcards, the comparisons
``= != > >= < <=``, tilde (``~1.2.3`` = ``>=1.2.3 <1.3.0``), caret
(``^1.2`` = ``>=1.2.0 <2.0.0``, ``^0.2.3`` = ``>=0.2.3 <0.3.0``), hyphen ranges
(``1.2 - 1.4.5``), terms joined by spaces or commas (and) and ``||`` (or).

Pre-releases (``1.3.0-rc.1``) are left out unless asked for: a pre-release
version satisfies a group of terms only when some term of that group itself
names a pre-release, as in ``>=1.3.0-0 <2.0.0``. An empty range means "the
newest release".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import total_ordering

_VERSION_RE = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)(?:\.(?P<minor>0|[1-9]\d*)(?:\.(?P<patch>0|[1-9]\d*))?)?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_STRICT_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
_TERM_RE = re.compile(
    r"^(?P<op>!=|>=|=>|<=|=<|~>|[=><~^])?\s*v?(?P<major>\d+|[xX*])"
    r"(?:\.(?P<minor>\d+|[xX*]))?(?:\.(?P<patch>\d+|[xX*]))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
_HYPHEN_RE = re.compile(r"(\S+)\s+-\s+(\S+)")
_OPERATOR_SPACE_RE = re.compile(r"(!=|>=|=>|<=|=<|~>|[=><~^])\s+")
_WILDCARDS = frozenset({"x", "X", "*"})


class InvalidVersion(ValueError):
    """A version or a range that cannot be read."""


def _pre_key(pre: str) -> tuple[tuple[int, int | str], ...]:
    # Numeric identifiers sort before alphanumeric ones and compare as numbers.
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))


@total_ordering
@dataclass(frozen=True)
class Version:
    """A version as Helm reads chart versions and tags: ``v`` prefix and missing parts allowed."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""
    build: str = ""
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION_RE.match(text.strip())
        if match is None:
            raise InvalidVersion(f"invalid version {text!r}")
        return cls(
            int(match["major"]),
            int(match["minor"] or 0),
            int(match["patch"] or 0),
            match["pre"] or "",
            match["build"] or "",
            text,
        )

    @property
    def core(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def _key(self) -> tuple[tuple[int, int, int], int, tuple[tuple[int, int | str], ...]]:
        # A release sorts after every pre-release of the same core version.
        pre = _pre_key(self.prerelease) if self.prerelease else ()
        return (self.core, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return self.text or ".".join(map(str, self.core)) + (
            f"-{self.prerelease}" if self.prerelease else ""
        )


def is_exact(text: str) -> bool:
    """Whether ``text`` names one version exactly (``MAJOR.MINOR.PATCH[-pre][+build]``)."""
    return _STRICT_RE.match(text.strip()) is not None


@dataclass(frozen=True)
class _Term:
    """One comparison as an interval (``None``: unbounded), or the complement of one for ``!=``."""

    low: Version | None
    low_inclusive: bool
    high: Version | None
    high_inclusive: bool
    excluded: tuple[Version, Version] | None  # != over a wildcard range [low, high)
    has_prerelease: bool

    def admits(self, version: Version) -> bool:
        if self.excluded is not None:
            lo, hi = self.excluded
            return not (lo <= version < hi)
        if self.low is not None and (
            version < self.low or (version == self.low and not self.low_inclusive)
        ):
            return False
        return self.high is None or (
            version < self.high or (version == self.high and self.high_inclusive)
        )


def _next_floor(major: int, minor: int, patch: int) -> Version:
    # The smallest version above every release of this core: its "-0" pre-release.
    return Version(major, minor, patch, "0")


def _parse_term(text: str, whole: str) -> _Term:
    match = _TERM_RE.match(text)
    if match is None:
        raise InvalidVersion(f"invalid version range {whole!r}: cannot read {text!r}")
    op = match["op"] or "="
    op = {"=>": ">=", "=<": "<=", "~>": "~"}.get(op, op)
    parts = [match["major"], match["minor"], match["patch"]]
    # How many leading parts are numbers; the rest are wildcards or missing.
    given = 0
    for part in parts:
        if part is None or part in _WILDCARDS:
            break
        given += 1
    major, minor, patch = (int(p) if i < given else 0 for i, p in enumerate(parts))
    pre = match["pre"] or ""
    has_pre = bool(pre)
    base = Version(major, minor, patch, pre)
    if given == 0:
        # "*", "x", ">=*": every version (pre-releases still need asking for).
        if op in ("<", "!="):
            return _Term(None, True, Version(0, 0, 0, "0"), False, None, has_pre)
        return _Term(None, True, None, True, None, has_pre)

    # The end of the wildcard range this term names: 1 -> 2.0.0, 1.2 -> 1.3.0.
    if given == 1:
        wild_end = _next_floor(major + 1, 0, 0)
    elif given == 2:
        wild_end = _next_floor(major, minor + 1, 0)
    else:
        wild_end = None

    if op == "=":
        if wild_end is None:
            return _Term(base, True, base, True, None, has_pre)
        return _Term(base, True, wild_end, False, None, has_pre)
    if op == "!=":
        if wild_end is None:
            return _Term(None, True, None, True, (base, _pre_successor(base)), has_pre)
        return _Term(None, True, None, True, (base, wild_end), has_pre)
    if op == ">":
        if wild_end is None:
            return _Term(base, False, None, True, None, has_pre)
        return _Term(wild_end, True, None, True, None, has_pre)
    if op == ">=":
        return _Term(base, True, None, True, None, has_pre)
    if op == "<":
        return _Term(None, True, base, False, None, has_pre)
    if op == "<=":
        if wild_end is None:
            return _Term(None, True, base, True, None, has_pre)
        return _Term(None, True, wild_end, False, None, has_pre)
    if op == "~":
        end = _next_floor(major + 1, 0, 0) if given == 1 else _next_floor(major, minor + 1, 0)
        return _Term(base, True, end, False, None, has_pre)
    # "^": the leftmost non-zero part may not change.
    if major > 0 or given == 1:
        end = _next_floor(major + 1, 0, 0)
    elif minor > 0 or given == 2:
        end = _next_floor(0, minor + 1, 0)
    else:
        end = _next_floor(0, 0, patch + 1)
    return _Term(base, True, end, False, None, has_pre)


def _pre_successor(version: Version) -> Version:
    # The version right after ``version`` in precedence, for "!= 1.2.3".
    if version.prerelease:
        return Version(*version.core, version.prerelease + ".0")
    return _next_floor(version.major, version.minor, version.patch + 1)


@dataclass(frozen=True)
class Range:
    """A parsed version range: any of several groups, each a conjunction of terms."""

    text: str
    groups: tuple[tuple[_Term, ...], ...]

    @classmethod
    def parse(cls, text: str) -> Range:
        stripped = text.strip()
        if stripped in ("", "latest"):
            stripped = "*"
        groups: list[tuple[_Term, ...]] = []
        for alternative in stripped.split("||"):
            expanded = _HYPHEN_RE.sub(r">=\1 <=\2", alternative.strip())
            expanded = _OPERATOR_SPACE_RE.sub(r"\1", expanded)
            words = [w for w in re.split(r"[\s,]+", expanded) if w]
            if not words:
                raise InvalidVersion(f"invalid version range {text!r}: empty alternative")
            groups.append(tuple(_parse_term(word, text) for word in words))
        return cls(text, tuple(groups))

    def admits(self, version: Version) -> bool:
        for group in self.groups:
            if version.prerelease and not any(term.has_prerelease for term in group):
                continue
            if all(term.admits(version) for term in group):
                return True
        return False

    def best(self, candidates: Iterable[str]) -> str | None:
        """The candidate (as written) with the highest version this range admits, or ``None``.

        Candidates that are not versions are skipped, as Helm skips such tags.
        """
        best: tuple[Version, str] | None = None
        for text in candidates:
            try:
                version = Version.parse(text)
            except InvalidVersion:
                continue
            if self.admits(version) and (best is None or version > best[0]):
                best = (version, text)
        return best[1] if best else None


def pick(candidates: Iterable[str], wanted: str) -> str | None:
    """The version to use among ``candidates`` for ``wanted`` (exact, a range, or "" for newest).

    An exact version is looked for as written first, as Helm does, so a
    version that only differs in build metadata is not picked by accident.
    """
    listed = list(candidates)
    if is_exact(wanted) and wanted.strip() in listed:
        return wanted.strip()
    return Range.parse(wanted).best(listed)
