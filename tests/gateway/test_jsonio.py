"""gateway/jsonio.py and the client-body parser on it: orjson's speed, the standard library's verdicts."""

from __future__ import annotations

import json

import pytest

from gateway import jsonio
from gateway.errors import GatewayError
from gateway.schema import parse_json, parse_json_object, sse_event


def refusal(raw: bytes) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse_json_object(raw)
    assert caught.value.status == 400
    return caught.value


def test_encodes_compact_utf8_bytes() -> None:
    value = {"content": "héllo 漢字 \u2028", "n": [1, 2.5, None, True]}
    encoded = jsonio.dumps(value)
    assert encoded == json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    assert jsonio.loads(encoded) == value
    assert jsonio.dumps_sorted({"b": 1, "a": {"d": 2, "c": 3}}) == b'{"a":{"c":3,"d":2},"b":1}'


def test_an_integer_beyond_64_bits_is_refused_naming_the_field() -> None:
    # orjson would hand back 1.2345678901234568e+29, a float the client never sent: the body is parsed
    # exactly again and the integer refused, as before the fast parser.
    error = refusal(b'{"model": "m", "seed": 123456789012345678901234567890}')
    assert error.param == "seed"
    assert "64-bit" in error.message
    error = refusal(b'{"model": "m", "seed": -9223372036854775809}')
    assert error.param == "seed"


def test_a_large_float_the_client_sent_stays_a_float() -> None:
    body = parse_json_object(b'{"model": "m", "x": 1e30, "y": 9223372036854775807, "z": -2.0}')
    assert body["x"] == 1e30 and isinstance(body["x"], float)
    assert body["y"] == 2**63 - 1 and isinstance(body["y"], int)
    assert body["z"] == -2.0 and isinstance(body["z"], float)


@pytest.mark.parametrize(
    ("raw", "wording"),
    [
        (b'{"a": NaN}', "NaN is not a JSON value"),
        (b'{"a": Infinity}', "Infinity is not a JSON value"),
        (b'{"a": 1,}', "Expecting property name enclosed in double quotes"),
        (b"\xff", "not valid JSON"),
    ],
)
def test_invalid_json_is_worded_as_the_standard_library_words_it(raw: bytes, wording: str) -> None:
    assert wording in refusal(raw).message


def test_a_lone_surrogate_is_refused_naming_the_field() -> None:
    # orjson refuses the escape outright; the stdlib parses it and the tree check names where it is.
    error = refusal(b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}')
    assert error.param == "messages[0].content"


def test_nesting_beyond_the_parsers_limit_is_a_400() -> None:
    error = refusal(b"[" * 5000 + b"]" * 5000)
    assert "nested too deeply" in error.message
    assert "nested too deeply" in refusal(b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}").message


def test_a_websocket_frame_may_be_text() -> None:
    assert parse_json('{"type": "ping"}') == {"type": "ping"}


def test_an_sse_event_carries_the_chunk_encoded_once() -> None:
    chunk = {"choices": [{"delta": {"content": "é"}}]}
    event = sse_event(chunk)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:-2]) == chunk
