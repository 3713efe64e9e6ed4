"""Go's and Sprig's template functions, and Go's way of printing values.

The functions Fleet users call in ``${ }`` value templates, with Go's
argument order (the piped value comes last) and Go's results: ``quote``
writes Go's quoted string, ``default`` treats zero values as empty, ``int``
of a non-number is 0, ``index`` of a missing key is nothing rather than an
error. A function here raising ``TypeError``/``ValueError`` becomes a
template error naming the function. Functions whose result changes on every
call (``now``, ``uuidv4``, ``randAlpha``) are deliberately absent: a value that
differs on each render would redeploy the bundle each time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any


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
    if value is None:
        return "<no value>"
    return sprint(value)


def sprint(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, Mapping):
        items = " ".join(f"{sprint(k)}:{sprint(value[k])}" for k in sorted(value, key=str))
        return f"map[{items}]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(sprint(item) for item in value) + "]"
    return str(value)


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
    return " ".join(json.dumps(sprint(v), ensure_ascii=False) for v in values if v is not None)


def _squote(*values: Any) -> str:
    return " ".join(f"'{sprint(v)}'" for v in values if v is not None)


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
            return json.dumps(sprint(value), ensure_ascii=False)
        if verb == "d" and isinstance(value, int) and not isinstance(value, bool):
            return ("%" + flags + "d") % value
        if verb in "fFeg" and isinstance(value, int | float) and not isinstance(value, bool):
            return ("%" + flags + verb) % value
        if verb == "x" and isinstance(value, int):
            return ("%" + flags + "x") % value
        if verb == "x" and isinstance(value, str):
            return value.encode().hex()
        if verb in "svt":
            return ("%" + flags + "s") % sprint(value)
        return f"%!{verb}({go_type(value)}={sprint(value)})"

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
    "print": lambda *args: "".join(sprint(a) for a in args),
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
    "split": lambda sep, s: {f"_{i}": p for i, p in enumerate(sprint(s).split(sep))},
    "splitList": lambda sep, s: _want_str(s).split(_want_str(sep)),
    "join": lambda sep, items: _want_str(sep).join(sprint(i) for i in items),
    "toString": sprint,
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
        sprint(kv[i]): kv[i + 1] if i + 1 < len(kv) else "" for i in range(0, len(kv), 2)
    },
    "list": lambda *items: list(items),
}
