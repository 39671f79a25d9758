"""The canonical request format (OpenAI's) and the checks a body must pass before the pipeline.

Validation is deliberately shallow and hand-written: the gateway checks what it relies on (``model``,
``messages``, ``input``, ``stream``) and the documented ranges of the parameters it knows
(gateway/request_schema.py), and passes every other field through to the provider untouched, so new
OpenAI parameters work without a gateway release and no per-request model copying is needed.
"""

from __future__ import annotations

import json
from typing import Any

from gateway import jsonio
from gateway.errors import invalid_request
from gateway.request_schema import (
    CHAT_PARAMS,
    EMBEDDING_PARAMS,
    MAX_DEPTH,
    RoundedInteger,
    check_params,
    check_tree,
)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and upstreams would reject the body.
    raise ValueError(f"{name} is not a JSON value")


def parse_json(raw: bytes | str) -> Any:
    """Any JSON value from a client, checked by :func:`~gateway.request_schema.check_tree` (depth,
    surrogates, numbers); 400 otherwise. Every body and WebSocket frame is parsed here, once.

    Parsed with :mod:`gateway.jsonio` (orjson); a body it refuses, or one with an integral float beyond 64
    bits (which orjson may have rounded from an integer), is parsed again with the standard library, so what
    is accepted and how a refusal is worded do not depend on the fast parser.
    """
    if not raw:
        raise invalid_request("The request body is empty; expected a JSON object.")
    try:
        value = jsonio.loads(raw)
        check_tree(value, exact_integers=False)
        return value
    except (jsonio.JSONDecodeError, RoundedInteger):
        return _parse_exactly(raw)


def _parse_exactly(raw: bytes | str) -> Any:
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        # A body of nested brackets exhausts the parser's recursion: the client's error, not a 500.
        raise invalid_request(
            f"The request body is not valid JSON: it is nested too deeply (more than {MAX_DEPTH} levels)."
        ) from None
    check_tree(value)
    return value


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; 400 otherwise."""
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("'model' is required and must be a non-empty string.", param="model")
    return model


ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
"""The message roles OpenAI accepts (``function`` is its deprecated form of ``tool``)."""


def check_chat(body: dict[str, Any]) -> tuple[str, bool, bool]:
    """Check a chat completion body; returns (model, stream, include_usage)."""
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' is required and must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise invalid_request(
                f"messages[{i}] must be an object with a string 'role'.", param=f"messages[{i}]"
            )
        if message["role"] not in ROLES:
            raise invalid_request(
                f"Invalid value for 'messages[{i}].role': must be one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise invalid_request(
                f"messages[{i}].content must be a string, an array of content parts or null.",
                param=f"messages[{i}].content",
            )
    check_params(body, CHAT_PARAMS)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid_request("'stream' must be a boolean.", param="stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise invalid_request("'stream_options' must be an object.", param="stream_options")
        if not stream:
            raise invalid_request(
                "'stream_options' is only allowed when 'stream' is true.", param="stream_options"
            )
        include_usage = options.get("include_usage") is True
    return model, stream, include_usage


def check_embeddings(body: dict[str, Any]) -> str:
    """Check an embeddings body; returns the model."""
    model = _model(body)
    value = body.get("input")
    valid = isinstance(value, str) or (
        isinstance(value, list)
        and bool(value)
        and (
            all(isinstance(v, str) for v in value)
            or all(isinstance(v, int) for v in value)
            or all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value)
        )
    )
    if not valid:
        raise invalid_request(
            "'input' must be a string, an array of strings, or an array of token arrays.", param="input"
        )
    check_params(body, EMBEDDING_PARAMS)
    return model


def chat_chunk(
    response_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    """One canonical ``chat.completion.chunk`` with a single choice carrying ``delta``."""
    return {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def sse_event(chunk: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``chunk``."""
    return b"data: " + jsonio.dumps(chunk) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
