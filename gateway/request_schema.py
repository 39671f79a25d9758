"""What a client's request may hold: limits on any parsed JSON, and the documented parameter ranges.

Two checks, both raising a 400 that names the field (``messages[0].content``, ``tools[0]``):

- :func:`check_tree` runs once on every parsed body and WebSocket frame, before anything else reads it:
  nesting deeper than :data:`MAX_DEPTH`, strings with a lone surrogate (valid JSON, not encodable as UTF-8),
  non-finite numbers (``1e400`` parses as infinity) and integers outside 64 bits. It walks iteratively, so
  nothing downstream (cache key, token estimate, JSON encoding) can recurse or fail to encode.
- :func:`check_params` checks the OpenAI parameters the gateway knows against :data:`CHAT_PARAMS` and
  :data:`EMBEDDING_PARAMS`: JSON-schema fragments, so the same data serves validation and the public
  OpenAPI document (gateway/openapi.py). Fields not listed pass through untouched, so new OpenAI
  parameters work without a gateway release.

The validator is hand-written over the small JSON-schema subset used here (``type``, ``minimum``,
``maximum``, ``enum``, ``items``, ``maxItems``, ``properties``, ``required``, ``additionalProperties``,
``anyOf``): a general validator (jsonschema, pydantic) would copy every body on the hot path and word its
errors for schemas, not for clients.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from gateway.errors import invalid_request

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a request may have (OpenAI's own bodies need fewer than 20)."""

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
"""Integers beyond 64 bits are no parameter of any upstream, and overflow money and counters."""

TOKENS_MAX = 2**31 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """``("messages", 0, "content")`` -> ``messages[0].content``."""
    text = ""
    for i, part in enumerate(path):
        # By position, not by the text so far: an empty key ("") still gets its separator.
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if i else part)
    return text


def _refuse(path: Path, problem: str) -> Exception:
    where = format_path(path)
    if not where:
        return invalid_request(f"The request body {problem}.")
    return invalid_request(f"Invalid value for '{where}': it {problem}.", param=where)


class RoundedInteger(Exception):
    """A float that may be an integer beyond 64 bits a parser rounded (orjson does): parse exactly again."""


def check_tree(value: Any, path: Path = (), *, exact_integers: bool = True) -> None:
    """Raise a 400 naming the field when ``value`` (parsed JSON) is too deep or holds an unusable value.

    With ``exact_integers=False`` (the value came from a parser that turns integers beyond 64 bits into
    floats) an integral float outside the 64-bit range raises :class:`RoundedInteger` instead, so the
    caller can parse exactly and report the integer, or keep the float the client really sent.
    """
    if _clean(value, exact_integers):
        return
    _check_tree_paths(value, path, exact_integers)


def _clean(value: Any, exact_integers: bool) -> bool:
    """Whether ``value`` passes :func:`check_tree`, walked without building a path for each child.

    Every body is clean, and building ``(*where, key)`` for each child was most of the check's cost (a
    measured 3.4 us of a 4.2 us parse of the benchmark's chat body). Any doubt (a problem, a type JSON does
    not parse to) answers False, and :func:`_check_tree_paths` walks again to raise exactly as before.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        item, level = pop()
        kind = type(item)
        if kind is str:
            if not item.isascii() and _SURROGATE.search(item):
                return False
        elif kind is dict:
            if level >= MAX_DEPTH:
                return False
            level += 1
            for key, child in item.items():
                if type(key) is not str or (not key.isascii() and _SURROGATE.search(key)):
                    return False
                if type(child) is str:  # the commonest leaf, checked here rather than pushed
                    if not child.isascii() and _SURROGATE.search(child):
                        return False
                elif child is not None:
                    push((child, level))
        elif kind is list:
            if level >= MAX_DEPTH:
                return False
            level += 1
            for child in item:
                if type(child) is str:
                    if not child.isascii() and _SURROGATE.search(child):
                        return False
                elif child is not None:
                    push((child, level))
        elif kind is int:
            if not INT_MIN <= item <= INT_MAX:
                return False
        elif kind is float:
            if not math.isfinite(item) or (not exact_integers and item.is_integer() and abs(item) >= 2**63):
                return False
        elif item is not None and kind is not bool:
            return False
    return True


def _check_tree_paths(value: Any, path: Path, exact_integers: bool) -> None:
    """:func:`check_tree`'s walk with each child's path, for the error naming the field."""
    stack: list[tuple[Any, Path, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                raise _refuse(
                    where, "contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode"
                )
        elif isinstance(item, dict):
            if depth >= MAX_DEPTH:
                raise _refuse(where, f"is nested too deeply (more than {MAX_DEPTH} levels)")
            for key, child in item.items():
                if not key.isascii() and _SURROGATE.search(key):
                    raise _refuse(where, "has a key with a lone surrogate (\\ud800-\\udfff)")
                stack.append((child, (*where, key), depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_DEPTH:
                raise _refuse(where, f"is nested too deeply (more than {MAX_DEPTH} levels)")
            stack.extend((child, (*where, i), depth + 1) for i, child in enumerate(item))
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _refuse(where, "is not a finite number")
            # Integers just past either end round to exactly +-2**63 as floats: the bound is inclusive.
            if not exact_integers and item.is_integer() and abs(item) >= 2**63:
                raise RoundedInteger
        elif isinstance(item, int) and not isinstance(item, bool) and not INT_MIN <= item <= INT_MAX:
            raise _refuse(where, "is an integer outside the 64-bit range")


# --- parameter schemas (JSON-schema fragments: validation and the OpenAPI document) ------------------------

Schema = Mapping[str, Any]


def _integer(minimum: int, maximum: int) -> Schema:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def _number(minimum: float, maximum: float) -> Schema:
    return {"type": "number", "minimum": minimum, "maximum": maximum}


_STRING: Schema = {"type": "string"}
_BOOLEAN: Schema = {"type": "boolean"}
_OBJECT: Schema = {"type": "object"}
_TOOL: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": _STRING,
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": _STRING,
                "description": _STRING,
                "parameters": _OBJECT,
                "strict": _BOOLEAN,
            },
        },
    },
}

CHAT_PARAMS: Mapping[str, Schema] = {
    "max_tokens": _integer(1, TOKENS_MAX),
    "max_completion_tokens": _integer(1, TOKENS_MAX),
    "n": _integer(1, 128),
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "seed": _integer(INT_MIN, INT_MAX),
    "stop": {"anyOf": [_STRING, {"type": "array", "items": _STRING}]},
    "tools": {"type": "array", "items": _TOOL},
    "tool_choice": {"anyOf": [_STRING, _OBJECT]},
    "parallel_tool_calls": _BOOLEAN,
    "user": _STRING,
    "metadata": {"type": "object", "additionalProperties": _STRING},
    "logprobs": _BOOLEAN,
    "top_logprobs": _integer(0, 20),
    "logit_bias": {"type": "object", "additionalProperties": _number(-100, 100)},
    "response_format": {"type": "object", "required": ["type"], "properties": {"type": _STRING}},
}
"""OpenAI chat parameters and their documented ranges; ``null`` means unset, as for OpenAI."""

EMBEDDING_PARAMS: Mapping[str, Schema] = {
    "dimensions": _integer(1, TOKENS_MAX),
    "user": _STRING,
    "encoding_format": {"type": "string", "enum": ["float", "base64"]},
}
"""OpenAI embeddings parameters (``input`` is checked by :func:`gateway.schema.check_embeddings`)."""


COMPLETION_PARAMS: Mapping[str, Schema] = {
    "prompt": {"anyOf": [_STRING, {"type": "array", "items": _STRING}]},
    **{
        name: CHAT_PARAMS[name]
        for name in (
            "max_tokens",
            "n",
            "temperature",
            "top_p",
            "seed",
            "stop",
            "user",
            "presence_penalty",
            "frequency_penalty",
            "logit_bias",
        )
    },
    "echo": _BOOLEAN,
    "best_of": _integer(1, 20),
    "suffix": _STRING,
    "logprobs": _integer(0, 5),
}
"""OpenAI legacy completions parameters (gateway/formats/completions.py says which it translates)."""


RESPONSES_PARAMS: Mapping[str, Schema] = {
    "input": {"anyOf": [_STRING, {"type": "array", "items": _OBJECT}]},
    "instructions": _STRING,
    "previous_response_id": _STRING,
    "max_output_tokens": _integer(1, TOKENS_MAX),
    "temperature": CHAT_PARAMS["temperature"],
    "top_p": CHAT_PARAMS["top_p"],
    "tools": {
        "type": "array",
        "items": {"type": "object", "required": ["type"], "properties": {"type": _STRING}},
    },
    "tool_choice": CHAT_PARAMS["tool_choice"],
    "parallel_tool_calls": _BOOLEAN,
    "text": {
        "type": "object",
        "properties": {"format": {"type": "object", "required": ["type"], "properties": {"type": _STRING}}},
    },
    "metadata": CHAT_PARAMS["metadata"],
    "user": _STRING,
    "store": _BOOLEAN,
    "stream": _BOOLEAN,
}
"""OpenAI Responses API parameters (gateway/formats/responses.py says which it translates or refuses)."""


def check_params(body: Mapping[str, Any], params: Mapping[str, Schema]) -> None:
    """Raise a 400 naming the field for the first parameter of ``body`` outside its schema."""
    # A body sets a few of the parameters a schema knows (the benchmark's chat body: 1 of 18), so its own
    # fields are looked up first: a third of the cost of asking the body for every known name. Only when
    # one is outside its schema does the walk below run, so the error names the same field as ever (the
    # first in the schema's order).
    try:
        for name, value in body.items():
            if value is not None:
                schema = params.get(name)
                if schema is not None:
                    _check(value, schema, (name,))
        return
    except Exception:
        pass
    check_params_in_order(body, params)


def check_params_in_order(body: Mapping[str, Any], params: Mapping[str, Schema]) -> None:
    """:func:`check_params` by the schema's order: the first parameter outside its schema raises."""
    for name, schema in params.items():
        value = body.get(name)
        if value is not None:
            _check(value, schema, (name,))


_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "object": dict,
    "array": list,
    "boolean": bool,
}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _JSON_TYPES[kind])


def _valid(value: Any, schema: Schema) -> bool:
    try:
        _check(value, schema, ())
    except Exception:
        return False
    return True


def _check(value: Any, schema: Schema, path: Path) -> None:
    if "anyOf" in schema:
        if not any(_valid(value, option) for option in schema["anyOf"]):
            raise _param_error(path, describe(schema))
        return
    kind = schema["type"]
    if not _is(value, kind):
        raise _param_error(path, describe(schema))
    if "enum" in schema and value not in schema["enum"]:
        raise _param_error(path, describe(schema))
    if "minimum" in schema and not schema["minimum"] <= value <= schema["maximum"]:
        raise _param_error(path, describe(schema))
    if kind == "array":
        if len(value) > schema.get("maxItems", len(value)):
            raise _param_error(path, describe(schema))
        for i, item in enumerate(value):
            _check(item, schema["items"], (*path, i))
    elif kind == "object":
        for name in schema.get("required", ()):
            if name not in value:
                raise _param_error((*path, name), "is required")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                if item is not None:
                    _check(item, properties[name], (*path, name))
            elif extra is not None:
                _check(item, extra, (*path, name))


def _param_error(path: Path, expected: str) -> Exception:
    where = format_path(path)
    return invalid_request(f"Invalid value for '{where}': {expected}.", param=where)


def describe(schema: Schema) -> str:
    """What ``schema`` asks for, in words: ``must be a number between 0 and 2``."""
    if "anyOf" in schema:
        return "must be " + " or ".join(describe(s).removeprefix("must be ") for s in schema["anyOf"])
    kind = schema["type"]
    if "enum" in schema:
        return "must be one of " + ", ".join(repr(v) for v in schema["enum"])
    if "minimum" in schema:
        low, high = schema["minimum"], schema["maximum"]
        noun = "an integer" if kind == "integer" else "a number"
        return f"must be {noun} between {low} and {high}"
    if kind == "array":
        noun = {"string": "strings", "object": "objects"}.get(schema["items"].get("type", ""), "values")
        return f"must be an array of {noun}"
    return {"string": "must be a string", "object": "must be an object", "boolean": "must be a boolean"}.get(
        kind, f"must be of type {kind}"
    )
