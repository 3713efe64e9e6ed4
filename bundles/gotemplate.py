"""The inside of a Go template action, as Fleet's value templating evaluates it.

:mod:`bundles.templating` finds the ``${ ... }`` actions; this module
evaluates one: a pipeline of commands over fields of the template data,
literals and functions, with Go's ``missingkey=error`` (reading a key a map
does not have is an error; ``index`` and ``get`` give nothing instead) and
Go's way of printing values (``<no value>`` for nothing, ``map[a:1]``...).
It is a small interpreter rather than a binding to Go because the agent runs
it per cluster in-process; what it does not implement is an error, never a
guess. Function names and argument order are Go's and Sprig's: the piped
value is the last argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bundles.errors import TemplateError

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


def go_type(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    return "[]interface {}"


def go_print(value: Any) -> str:
    """A value as Go's template printing writes it (``fmt.Print``; nothing is ``<no value>``)."""
    if value is None or value is _NOTHING:
        return "<no value>"
    return _sprint(value)


def _sprint(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, Mapping):
        items = " ".join(f"{_sprint(k)}:{_sprint(value[k])}" for k in sorted(value, key=str))
        return f"map[{items}]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_sprint(item) for item in value) + "]"
    return str(value)


# -- functions ---------------------------------------------------------------------


def _want_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"wrong type for value; expected string; got {go_type(value)}")
    return value


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float | str | list | tuple | Mapping):
        return not value
    return False


def _default(default: Any, *given: Any) -> Any:
    return default if not given or _empty(given[0]) else given[0]


def _quote(*values: Any) -> str:
    return " ".join(json.dumps(_sprint(v), ensure_ascii=False) for v in values if v is not None)


def _squote(*values: Any) -> str:
    return " ".join(f"'{_sprint(v)}'" for v in values if v is not None)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return 0
    return 0


def _to_float(value: Any) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return 0.0
    return 0.0


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if item is None:
            raise ValueError("index of untyped nil")
        if isinstance(item, Mapping):
            item = item.get(key)
        elif isinstance(item, list | tuple | str):
            if not isinstance(key, int) or not 0 <= key < len(item):
                raise IndexError(f"index out of range: {key}")
            item = item[key]
        else:
            raise ValueError(f"can't index item of type {go_type(item)}")
    return item


def _get(mapping: Mapping[str, Any], key: str) -> Any:
    return mapping.get(key, "")


def _has_key(mapping: Mapping[str, Any], key: str) -> bool:
    return key in mapping


def _printf(fmt: str, *args: Any) -> str:
    queue = list(args)

    def one(match: re.Match[str]) -> str:
        flags, verb = match.group(1), match.group(2)
        if verb == "%":
            return "%"
        if not queue:
            return f"%!{verb}(MISSING)"
        value = queue.pop(0)
        if verb == "q":
            return json.dumps(_sprint(value), ensure_ascii=False)
        if verb == "d" and isinstance(value, int) and not isinstance(value, bool):
            return ("%" + flags + "d") % value
        if verb in "fFeg" and isinstance(value, int | float) and not isinstance(value, bool):
            return ("%" + flags + verb) % value
        if verb == "x" and isinstance(value, int):
            return ("%" + flags + "x") % value
        if verb == "x" and isinstance(value, str):
            return value.encode().hex()
        if verb in "svt":
            return ("%" + flags + "s") % _sprint(value)
        return f"%!{verb}({go_type(value)}={_sprint(value)})"

    return re.sub(r"%([-+ 0#]*\d*(?:\.\d+)?)([a-zA-Z%])", one, fmt)


def _to_json(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _b64dec(value: Any) -> str:
    try:
        return base64.b64decode(_want_str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        return str(exc)


def _and(first: Any, *rest: Any) -> Any:
    for value in (first, *rest):
        if _empty(value):
            return value
    return rest[-1] if rest else first


def _or(first: Any, *rest: Any) -> Any:
    for value in (first, *rest):
        if not _empty(value):
            return value
    return rest[-1] if rest else first


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Go's builtins
    "index": _index,
    "len": len,
    "not": _empty,
    "and": _and,
    "or": _or,
    "eq": lambda a, *others: any(a == b for b in others),
    "ne": lambda a, b: a != b,
    "print": lambda *args: "".join(_sprint(a) for a in args),
    "printf": _printf,
    # Sprig
    "default": _default,
    "empty": _empty,
    "coalesce": lambda *args: next((a for a in args if not _empty(a)), None),
    "ternary": lambda yes, no, condition: yes if condition else no,
    "quote": _quote,
    "squote": _squote,
    "upper": lambda s: _want_str(s).upper(),
    "lower": lambda s: _want_str(s).lower(),
    "title": lambda s: re.sub(r"\b[a-z]", lambda m: m.group().upper(), _want_str(s)),
    "trim": lambda s: _want_str(s).strip(),
    "trimPrefix": lambda prefix, s: _want_str(s).removeprefix(_want_str(prefix)),
    "trimSuffix": lambda suffix, s: _want_str(s).removesuffix(_want_str(suffix)),
    "replace": lambda old, new, s: _want_str(s).replace(_want_str(old), _want_str(new)),
    "contains": lambda sub, s: _want_str(sub) in _want_str(s),
    "hasPrefix": lambda prefix, s: _want_str(s).startswith(_want_str(prefix)),
    "hasSuffix": lambda suffix, s: _want_str(s).endswith(_want_str(suffix)),
    "split": lambda sep, s: {f"_{i}": p for i, p in enumerate(_sprint(s).split(sep))},
    "splitList": lambda sep, s: _want_str(s).split(_want_str(sep)),
    "join": lambda sep, items: _want_str(sep).join(_sprint(i) for i in items),
    "toString": _sprint,
    "int": _to_int,
    "int64": _to_int,
    "float64": _to_float,
    "b64enc": lambda s: base64.b64encode(_want_str(s).encode()).decode(),
    "b64dec": _b64dec,
    "sha256sum": lambda s: hashlib.sha256(_want_str(s).encode()).hexdigest(),
    "toJson": _to_json,
    "hasKey": _has_key,
    "get": _get,
    "dict": lambda *kv: {
        _sprint(kv[i]): kv[i + 1] if i + 1 < len(kv) else "" for i in range(0, len(kv), 2)
    },
    "list": lambda *items: list(items),
}
