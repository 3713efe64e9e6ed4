"""Label selectors: the Kubernetes ``LabelSelector`` model, matching, and parsing.

Two spellings reach shoal. Bundles carry the structured form Fleet uses
(``matchLabels`` plus ``matchExpressions`` with In/NotIn/Exists/DoesNotExist);
the CLI takes kubectl's ``-l`` syntax (``env=prod,region notin (us),!canary,tier``).
Both parse into :class:`LabelSelector`. An empty selector matches every set of
labels, as in Kubernetes; "no selector at all" is a different thing and is
expressed by ``None`` where a selector is optional.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.errors import InvalidNameError, SelectorError

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}\Z")
_VALUE_RE = re.compile(rf"^({_NAME})?\Z")


def validate_label_key(key: str) -> str:
    if not _KEY_RE.match(key) or len(key.split("/", maxsplit=1)[0]) > 253:
        raise InvalidNameError(
            f"invalid label key {key!r}: want an optional DNS prefix and '/', then up to "
            "63 characters of letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit",
            field="label key",
            value=key,
        )
    return key


def validate_label_value(key: str, value: str) -> str:
    if not isinstance(value, str) or not _VALUE_RE.match(value):
        raise InvalidNameError(
            f"invalid value {value!r} for label {key!r}: want up to 63 characters of "
            "letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            field=f"label {key}",
            value=str(value),
        )
    return value


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        validate_label_key(key)
        validate_label_value(key, value)
    return dict(labels)


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class Requirement(BaseModel):
    """One ``matchExpressions`` entry."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    @field_validator("operator", mode="before")
    @classmethod
    def _known_operator(cls, value: object) -> object:
        if isinstance(value, str) and value not in Operator.__members__.values():
            known = ", ".join(op.value for op in Operator)
            raise ValueError(f"unknown operator {value!r} (known: {known})")
        return value

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Requirement:
        validate_label_key(self.key)
        if self.operator in (Operator.IN, Operator.NOT_IN) and not self.values:
            raise ValueError(f"operator {self.operator.value} on {self.key!r} needs values")
        if self.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and self.values:
            raise ValueError(f"operator {self.operator.value} on {self.key!r} takes no values")
        for value in self.values:
            validate_label_value(self.key, value)
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        match self.operator:
            case Operator.IN:
                return present and labels[self.key] in self.values
            case Operator.NOT_IN:
                return not present or labels[self.key] not in self.values
            case Operator.EXISTS:
                return present
            case Operator.DOES_NOT_EXIST:
                return not present


class LabelSelector(BaseModel):
    """A Kubernetes ``LabelSelector``; all requirements must hold (AND)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: tuple[Requirement, ...] = Field(default=(), alias="matchExpressions")

    @field_validator("match_labels")
    @classmethod
    def _valid_labels(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_labels(value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions)

    def keys(self) -> set[str]:
        """Label keys this selector reads."""
        return set(self.match_labels) | {req.key for req in self.match_expressions}

    def mentioned_values(self) -> dict[str, set[str]]:
        """For each key read, the values the selector compares against."""
        out: dict[str, set[str]] = {key: set() for key in self.keys()}
        for key, value in self.match_labels.items():
            out[key].add(value)
        for req in self.match_expressions:
            out[req.key].update(req.values)
        return out

    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def __str__(self) -> str:
        return format_selector(self)


_SET_RE = re.compile(r"^\s*(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<vals>[^()]*)\)\s*\Z")
_EQ_RE = re.compile(r"^\s*(?P<key>[^\s!=()]+)\s*(?P<op>==|=|!=)\s*(?P<val>[^\s!=()]*)\s*\Z")
_EXISTS_RE = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)\s*\Z")


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in selector {text!r}", selector=text)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise SelectorError(f"unbalanced '(' in selector {text!r}", selector=text)
    parts.append("".join(current))
    return parts


def parse_selector(text: str) -> LabelSelector:
    """Parse kubectl ``-l`` syntax into a :class:`LabelSelector`.

    ``""`` parses to the empty selector, which matches everything.
    """
    if not text.strip():
        return LabelSelector()
    match_labels: dict[str, str] = {}
    expressions: list[Requirement] = []
    try:
        for part in _split_top_level(text):
            if not part.strip():
                raise SelectorError(f"empty term in selector {text!r}", selector=text)
            if m := _SET_RE.match(part):
                # As in Kubernetes' parser, "()" is the set of the empty value and an
                # empty item between commas is the empty value too.
                values = tuple(v.strip() for v in m["vals"].split(","))
                op = Operator.IN if m["op"] == "in" else Operator.NOT_IN
                expressions.append(Requirement(key=m["key"], operator=op, values=values))
            elif m := _EQ_RE.match(part):
                key, value = m["key"], m["val"]
                validate_label_key(key)
                validate_label_value(key, value)
                if m["op"] == "!=":
                    expressions.append(
                        Requirement(key=key, operator=Operator.NOT_IN, values=(value,))
                    )
                elif key in match_labels and match_labels[key] != value:
                    expressions.append(Requirement(key=key, operator=Operator.IN, values=(value,)))
                else:
                    match_labels[key] = value
            elif m := _EXISTS_RE.match(part):
                op = Operator.DOES_NOT_EXIST if m["neg"] else Operator.EXISTS
                expressions.append(Requirement(key=m["key"], operator=op))
            else:
                raise SelectorError(
                    f"cannot parse {part.strip()!r} in selector {text!r}: want key=value, "
                    "key!=value, key in (a,b), key notin (a,b), key or !key",
                    selector=text,
                )
        return LabelSelector(match_labels=match_labels, match_expressions=tuple(expressions))
    except InvalidNameError as exc:
        raise SelectorError(f"in selector {text!r}: {exc}", selector=text) from exc
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise SelectorError(f"in selector {text!r}: {exc}", selector=text) from exc


def format_selector(selector: LabelSelector) -> str:
    """Render a selector in kubectl syntax; ``parse_selector`` reads it back."""
    terms = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for req in selector.match_expressions:
        match req.operator:
            case Operator.IN:
                terms.append(f"{req.key} in ({','.join(req.values)})")
            case Operator.NOT_IN if len(req.values) == 1:
                terms.append(f"{req.key}!={req.values[0]}")
            case Operator.NOT_IN:
                terms.append(f"{req.key} notin ({','.join(req.values)})")
            case Operator.EXISTS:
                terms.append(req.key)
            case Operator.DOES_NOT_EXIST:
                terms.append(f"!{req.key}")
    return ",".join(terms)


def parse_labels(text: str) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` (the ``--labels`` flag) into a validated dict."""
    labels: dict[str, str] = {}
    if not text.strip():
        return labels
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise InvalidNameError(
                f"label {part.strip()!r} has no '=': want key=value",
                field="labels",
                value=part,
            )
        labels[validate_label_key(key.strip())] = validate_label_value(key, value.strip())
    return labels


def any_matches(selectors: Iterable[LabelSelector], labels: Mapping[str, str]) -> bool:
    return any(sel.matches(labels) for sel in selectors)
