"""Property tests of the request parsers with hostile values: whatever a client sends, a parser either
accepts a body that every later stage can encode and walk, or refuses it with a 400 naming the field;
never another exception (which would be a 500)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.formats.anthropic import request_to_chat
from gateway.request_schema import (
    CHAT_PARAMS,
    EMBEDDING_PARAMS,
    MAX_DEPTH,
    RoundedInteger,
    _check_tree_paths,
    _clean,
    check_params,
    check_params_in_order,
    check_tree,
)
from gateway.schema import check_chat, check_embeddings, parse_json

PROPERTY = settings(
    max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Every code point, lone surrogates included (hypothesis leaves them out of text() by default).
HOSTILE_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
HOSTILE_NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2, 2.5, 1e400, -1e400, 2**63, 2**31, 10**30]),
)
SCALARS = st.one_of(st.none(), st.booleans(), HOSTILE_NUMBERS, HOSTILE_TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(HOSTILE_TEXT, inner, max_size=4)),
    max_leaves=20,
)
DEEP = st.integers(min_value=0, max_value=3 * MAX_DEPTH).map(lambda d: "[" * d + "]" * d)


def chat_bodies() -> st.SearchStrategy[dict[str, Any]]:
    """Chat bodies whose known fields hold hostile values of any type."""
    message = st.fixed_dictionaries(
        {"role": st.one_of(st.sampled_from(["user", "system", "assistant"]), JSON_VALUES)},
        optional={"content": st.one_of(HOSTILE_TEXT, JSON_VALUES)},
    )
    known = {name: JSON_VALUES for name in (*CHAT_PARAMS, "stream", "stream_options")}
    return st.fixed_dictionaries(
        {
            "model": st.one_of(st.just("echo"), JSON_VALUES),
            "messages": st.one_of(st.lists(message), JSON_VALUES),
        },
        optional=known,
    )


def encodable(value: Any) -> bytes:
    """What later stages do with an accepted body: encode it as UTF-8 JSON and walk it (cache keys)."""
    json.dumps(value, sort_keys=True, allow_nan=False)
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def refused_well(exc: GatewayError) -> None:
    assert exc.status == 400 and exc.type == "invalid_request_error"
    encodable(exc.body())  # the answer itself can be sent


@PROPERTY
@given(
    st.one_of(JSON_VALUES.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64), DEEP.map(str.encode))
)
def test_parse_json_accepts_only_what_later_stages_can_encode(raw: bytes) -> None:
    try:
        value = parse_json(raw)
    except GatewayError as exc:
        refused_well(exc)
        return
    encodable(value)
    assert depth(value) <= MAX_DEPTH


@PROPERTY
@given(st.one_of(chat_bodies(), JSON_VALUES.filter(lambda v: isinstance(v, dict))))
def test_check_chat_accepts_or_names_the_field(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    try:
        parsed = parse_json(raw)
        assert isinstance(parsed, dict)
        model, stream, _ = check_chat(parsed)
    except GatewayError as exc:
        refused_well(exc)
        if exc.param is not None:
            # The field named is one the body has, or a required one it lacks.
            fields = [*map(str, body), "model", "messages"]
            assert any(exc.param == f or exc.param.startswith((f"{f}.", f"{f}[")) for f in fields), exc.param
        return
    encodable(parsed)
    assert isinstance(model, str) and model and isinstance(stream, bool)
    for name, value in parsed.items():
        if name in CHAT_PARAMS and value is not None:
            assert not isinstance(value, float) or value == value  # no NaN got through


@PROPERTY
@given(
    st.fixed_dictionaries(
        {"model": st.one_of(st.just("echo"), JSON_VALUES), "input": JSON_VALUES},
        optional={name: JSON_VALUES for name in EMBEDDING_PARAMS},
    )
)
def test_check_embeddings_accepts_or_names_the_field(body: dict[str, Any]) -> None:
    try:
        parsed = parse_json(json.dumps(body).encode())
        assert isinstance(parsed, dict)
        check_embeddings(parsed)
    except GatewayError as exc:
        refused_well(exc)
        return
    encodable(parsed)


@PROPERTY
@given(
    st.fixed_dictionaries(
        {
            "model": st.one_of(st.just("echo"), JSON_VALUES),
            "max_tokens": st.one_of(st.just(16), HOSTILE_NUMBERS, JSON_VALUES),
            "messages": st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"role": st.one_of(st.sampled_from(["user", "assistant"]), JSON_VALUES)},
                        optional={"content": st.one_of(HOSTILE_TEXT, JSON_VALUES)},
                    )
                ),
                JSON_VALUES,
            ),
        },
        optional={
            name: JSON_VALUES
            for name in (
                "system",
                "temperature",
                "top_p",
                "stop_sequences",
                "tools",
                "tool_choice",
                "metadata",
            )
        },
    )
)
def test_the_anthropic_parser_accepts_or_names_the_field(body: dict[str, Any]) -> None:
    try:
        parsed = parse_json(json.dumps(body).encode())
        assert isinstance(parsed, dict)
        check_chat(request_to_chat(parsed))
    except GatewayError as exc:
        refused_well(exc)
        return
    encodable(parsed)


@pytest.mark.parametrize("depth_", [MAX_DEPTH, MAX_DEPTH + 1])
def test_the_depth_limit_is_exact(depth_: int) -> None:
    raw = ("[" * depth_ + "]" * depth_).encode()
    if depth_ <= MAX_DEPTH:
        assert depth(parse_json(raw)) == depth_
    else:
        with pytest.raises(GatewayError, match="nested too deeply"):
            parse_json(raw)


def _nested(depth: int) -> Any:
    """Lists and objects ``depth`` levels deep, alternating, around a lone surrogate."""
    value: Any = "\ud800"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def _outcome(check: Any, value: Any, exact_integers: bool) -> tuple[str, str | None]:
    try:
        check(value, exact_integers=exact_integers)
    except GatewayError as exc:
        return "refused", str(exc.body())
    except RoundedInteger:
        return "rounded", None
    return "accepted", None


def _reference(value: Any, exact_integers: bool = True) -> None:
    _check_tree_paths(value, (), exact_integers)


@PROPERTY
@given(
    st.one_of(
        JSON_VALUES,
        st.integers(min_value=1, max_value=2 * MAX_DEPTH).map(_nested),
        st.recursive(JSON_VALUES, lambda v: st.lists(v, max_size=2)),
    ),
    st.booleans(),
)
def test_check_tree_answers_as_its_walk_with_paths(value: Any, exact_integers: bool) -> None:
    """check_tree walks without paths first (the speed of every body) and walks again with paths only when
    that walk finds anything: accepted, refused (with the same message naming the field) or rounded, it
    answers exactly as the walk with paths alone."""
    assert _outcome(check_tree, value, exact_integers) == _outcome(_reference, value, exact_integers)
    assert _clean(value, exact_integers) == (_outcome(_reference, value, exact_integers)[0] == "accepted")


@PROPERTY
@given(chat_bodies().flatmap(lambda body: st.permutations(list(body.items())).map(dict)))
def test_check_params_names_the_field_its_schema_order_names(body: dict[str, Any]) -> None:
    """check_params looks the body's own fields up first (in the body's order, shuffled here); whatever it
    finds, it accepts or refuses as the walk over the schema in its order does, naming the same field when
    several are wrong."""

    def outcome(check: Any) -> tuple[str, str | None]:
        try:
            check(body, CHAT_PARAMS)
        except GatewayError as exc:
            return "refused", str(exc.body())
        return "accepted", None

    assert outcome(check_params) == outcome(check_params_in_order)
