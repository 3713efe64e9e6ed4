"""The inside of a Go template action, as Fleet's value templating evaluates it.

:mod:`bundles.templating` finds the ``${ ... }`` actions; this module parses
and evaluates one: a pipeline of commands over fields of the template data,
literals and the functions of :mod:`bundles.gofunctions`, with Go's
``missingkey=error`` (reading a key a map does not have is an error;
``index`` and ``get`` give nothing instead). It is a small interpreter
rather than a binding to Go because the agent runs it per cluster
in-process; what it does not implement is an error, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bundles.errors import TemplateError
from bundles.gofunctions import FUNCTIONS, go_print, go_type

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
    | (?P<field>(?:\$[A-Za-z0-9_]*)?(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\$[A-Za-z0-9_]*|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[|()])
    """,
    re.VERBOSE,
)
_CONTROL = {"if", "else", "end", "range", "with", "define", "template", "block", "break"}


@dataclass(frozen=True)
class _Field:
    names: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class _Func:
    name: str


@dataclass(frozen=True)
class _Literal:
    value: Any


@dataclass(frozen=True)
class _Pipe:
    commands: tuple[tuple[Any, ...], ...]


class _Parser:
    def __init__(self, text: str, field: str) -> None:
        self.field = field
        self.tokens = self._lex(text)
        self.pos = 0

    def fail(self, message: str) -> TemplateError:
        return TemplateError(f"{self.field}: {message}", field=self.field)

    def _lex(self, text: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise self.fail(f"unexpected {text[pos]!r} in action {text!r}")
            kind = match.lastgroup or ""
            if kind != "space":
                tokens.append((kind, match.group()))
            pos = match.end()
        return tokens

    def parse(self) -> _Pipe:
        if not self.tokens:
            raise self.fail("missing value for command")
        first_kind, first = self.tokens[0]
        if first_kind == "ident" and first in _CONTROL:
            raise self.fail(f"the {first!r} action is not supported in values templates")
        pipe = self.pipeline()
        if self.pos < len(self.tokens):
            raise self.fail(f"unexpected {self.tokens[self.pos][1]!r}")
        return pipe

    def pipeline(self) -> _Pipe:
        commands = [self.command()]
        while self.pos < len(self.tokens) and self.tokens[self.pos][1] == "|":
            self.pos += 1
            commands.append(self.command())
        return _Pipe(tuple(commands))

    def command(self) -> tuple[Any, ...]:
        operands: list[Any] = []
        while self.pos < len(self.tokens):
            kind, text = self.tokens[self.pos]
            if text in ("|", ")"):
                break
            self.pos += 1
            operands.append(self.operand(kind, text))
        if not operands:
            raise self.fail("missing value for command")
        return tuple(operands)

    def operand(self, kind: str, text: str) -> Any:
        if text == "(":
            inner = self.pipeline()
            if self.pos >= len(self.tokens) or self.tokens[self.pos][1] != ")":
                raise self.fail("unclosed left paren")
            self.pos += 1
            return inner
        if text == ")":
            raise self.fail("unexpected right paren")
        if kind == "field":
            if text.startswith("$") and not text.startswith("$.") and text != "$":
                raise self.fail(f"undefined variable {text!r}")
            names = tuple(part for part in text.lstrip("$").split(".") if part)
            return _Field(names, text)
        if kind == "string":
            return _Literal(_unquote(text, self))
        if kind == "raw":
            return _Literal(text[1:-1])
        if kind == "number":
            return _Literal(_number(text))
        if text in ("true", "false"):
            return _Literal(text == "true")
        if text == "nil":
            return _Literal(None)
        if text not in FUNCTIONS:
            raise self.fail(f'function "{text}" not defined')
        return _Func(text)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b"}


def _unquote(text: str, parser: _Parser) -> str:
    body = text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        code = body[i + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            i += 2
        elif code in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[i + 2 : i + 2 + width]
            try:
                out.append(chr(int(digits, 16)))
            except ValueError:
                raise parser.fail(f"invalid escape in {text}") from None
            i += 2 + width
        else:
            raise parser.fail(f"invalid escape in {text}")
    return "".join(out)


def _number(text: str) -> int | float:
    try:
        return int(text, 0)
    except ValueError:
        return float(text)


def evaluate(action: str, data: Mapping[str, Any], *, field: str = "") -> Any:
    """The value of one action's pipeline, e.g. ``get .ClusterLabels "env" | upper``."""
    parser = _Parser(action, field)
    return _Evaluator(data, field).pipe(parser.parse())


class _Evaluator:
    def __init__(self, data: Mapping[str, Any], field: str) -> None:
        self.data = data
        self.field = field

    def fail(self, message: str) -> TemplateError:
        return TemplateError(f"{self.field}: {message}", field=self.field)

    def pipe(self, pipe: _Pipe) -> Any:
        value: Any = _NOTHING
        for command in pipe.commands:
            value = self.command(command, value)
        return value

    def command(self, operands: tuple[Any, ...], piped: Any) -> Any:
        head = operands[0]
        if isinstance(head, _Func):
            args = [self.arg(op) for op in operands[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            try:
                return FUNCTIONS[head.name](*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, KeyError, IndexError) as exc:
                raise self.fail(f"error calling {head.name}: {exc}") from exc
        if len(operands) > 1 or piped is not _NOTHING:
            raise self.fail(f"can't give argument to non-function {_describe(head)}")
        return self.arg(head)

    def arg(self, operand: Any) -> Any:
        if isinstance(operand, _Literal):
            return operand.value
        if isinstance(operand, _Pipe):
            return self.pipe(operand)
        if isinstance(operand, _Func):
            return self.command((operand,), _NOTHING)
        return self.lookup(operand)

    def lookup(self, ref: _Field) -> Any:
        value: Any = self.data
        for depth, name in enumerate(ref.names):
            if value is None:
                raise self.fail(
                    f"nil pointer evaluating {'.'.join(ref.names[:depth]) or '.'}.{name}"
                )
            if not isinstance(value, Mapping):
                raise self.fail(f"can't evaluate field {name} in type {go_type(value)}")
            if name not in value:
                raise self.fail(f'map has no entry for key "{name}" (in {ref.text})')
            value = value[name]
        return value


_NOTHING = object()


def _describe(operand: Any) -> str:
    if isinstance(operand, _Field):
        return operand.text
    if isinstance(operand, _Literal):
        return go_print(operand.value)
    return "(pipeline)"


__all__ = ["FUNCTIONS", "evaluate", "go_print", "go_type"]
