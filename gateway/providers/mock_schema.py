"""A minimal instance of a JSON Schema, so the mock answers structured output that validates.

The mock uses it for ``response_format: json_schema`` and for tool-call ``arguments``. Hand-written on
purpose: the libraries that generate instances (hypothesis-jsonschema and the like) draw random values and
pull a test framework into the runtime, where a mock needs one small, deterministic answer and no
dependency. It covers what SDKs and pydantic emit: objects with their ``required`` properties, strings
(with ``format``, ``minLength``/``maxLength``), numbers and integers (bounds, ``multipleOf``), booleans,
null, arrays (``minItems``, ``prefixItems``), ``enum``/``const``, ``anyOf``/``oneOf``/``allOf`` and
``$ref`` into ``$defs``/``definitions``. ``pattern`` is not honoured (that would need a regex inverter).
"""

from __future__ import annotations

import math
from typing import Any

# Deep enough for any real nesting; stops a schema whose required properties refer to themselves.
_MAX_DEPTH = 32

_FORMATS = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "duration": "P0D",
    "email": "user@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def instance(schema: Any) -> Any:
    """The smallest plain value that validates against ``schema`` (a JSON Schema as a dict)."""
    return _instance(schema, schema, 0, frozenset())


def _resolve(ref: str, root: Any) -> Any:
    """The schema a local ``$ref`` (``#/$defs/Name``) points at; ``{}`` (anything) when it cannot."""
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def _instance(schema: Any, root: Any, depth: int, seen: frozenset[str]) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if isinstance(schema.get("$ref"), str):
        ref = schema["$ref"]
        return _instance(_resolve(ref, root), root, depth + 1, seen | {ref})
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _instance(_option(options, seen), root, depth + 1, seen)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        return _all_of(schema, root, depth, seen)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None and ("properties" in schema or "required" in schema):
        kind = "object"
    elif kind is None and "items" in schema:
        kind = "array"
    if kind == "object":
        return _object(schema, root, depth, seen)
    if kind == "array":
        return _array(schema, root, depth, seen)
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return _integer(schema)
    if kind == "number":
        return _number(schema)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return {}  # no type at all: any value validates, and an object is what callers parse most easily


def _option(options: list[Any], seen: frozenset[str]) -> Any:
    """The option to answer: ``Optional[X]`` is ``anyOf: [X, null]``, answer X as a model would, unless X
    refers back to a schema already being answered (``boss: Person | None`` inside Person): then null, so
    a recursive model ends."""

    def null(option: Any) -> bool:
        return isinstance(option, dict) and option.get("type") == "null"

    def recursive(option: Any) -> bool:
        return isinstance(option, dict) and option.get("$ref") in seen

    fresh = [o for o in options if not null(o) and not recursive(o)]
    return fresh[0] if fresh else next((o for o in options if null(o)), options[0])


def _all_of(schema: dict[str, Any], root: Any, depth: int, seen: frozenset[str]) -> Any:
    parts = [_instance(s, root, depth + 1, seen) for s in schema["allOf"]]
    rest = {k: v for k, v in schema.items() if k != "allOf"}
    if rest:
        parts.append(_instance(rest, root, depth + 1, seen))
    if all(isinstance(p, dict) for p in parts):
        merged: dict[str, Any] = {}
        for part in parts:
            merged.update(part)
        return merged
    return parts[0]


def _object(schema: dict[str, Any], root: Any, depth: int, seen: frozenset[str]) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
    return {name: _instance(properties.get(name, {}), root, depth + 1, seen) for name in names}


def _array(schema: dict[str, Any], root: Any, depth: int, seen: frozenset[str]) -> list[Any]:
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    minimum = schema.get("minItems")
    count = max(minimum if isinstance(minimum, int) else 0, len(prefix))
    items = schema.get("items")
    return [_instance(prefix[i] if i < len(prefix) else items, root, depth + 1, seen) for i in range(count)]


def _string(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "string") if isinstance(fmt, str) else "string"
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text += "x" * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[: max(high, 0)]
    return text


def _bounds(schema: dict[str, Any]) -> tuple[float, float, bool, bool]:
    """(low, high, low exclusive, high exclusive), unbounded sides as infinities."""
    low, high, low_ex, high_ex = -math.inf, math.inf, False, False
    if isinstance(schema.get("minimum"), int | float):
        low = schema["minimum"]
    if isinstance(schema.get("exclusiveMinimum"), int | float) and schema["exclusiveMinimum"] >= low:
        low, low_ex = schema["exclusiveMinimum"], True
    if isinstance(schema.get("maximum"), int | float):
        high = schema["maximum"]
    if isinstance(schema.get("exclusiveMaximum"), int | float) and schema["exclusiveMaximum"] <= high:
        high, high_ex = schema["exclusiveMaximum"], True
    return low, high, low_ex, high_ex


def _integer(schema: dict[str, Any]) -> int:
    low, high, low_ex, high_ex = _bounds(schema)
    step = schema.get("multipleOf")
    step = abs(step) if isinstance(step, int) and step else 1
    first = None if low == -math.inf else math.floor(low) + 1 if low_ex else math.ceil(low)
    last = None if high == math.inf else math.ceil(high) - 1 if high_ex else math.floor(high)
    # The multiple of ``step`` nearest zero inside [first, last].
    if first is not None and first > 0:
        return -(-first // step) * step
    if last is not None and last < 0:
        return (last // step) * step
    return 0


def _number(schema: dict[str, Any]) -> float | int:
    low, high, low_ex, high_ex = _bounds(schema)
    step = schema.get("multipleOf")
    if low > 0 or (low == 0 and low_ex):
        value: float = low if not low_ex else (low + 1 if low + 1 < high else (low + high) / 2)
    elif high < 0 or (high == 0 and high_ex):
        value = high if not high_ex else (high - 1 if high - 1 > low else (low + high) / 2)
    else:
        return 0
    if isinstance(step, int | float) and step > 0:
        value = math.ceil(value / step) * step if value > 0 else math.floor(value / step) * step
    return int(value) if float(value).is_integer() else value
