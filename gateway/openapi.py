"""``GET /openapi.json``: an OpenAPI 3.1 document of the client API, and of nothing else.

FastAPI's generated document would list the admin API to anyone, so it stays off; this one is written
from the same parameter schemas the gateway validates requests with (gateway/request_schema.py), so the
document and the validation cannot drift apart. It describes the request bodies the gateway checks and
the statuses it answers; response bodies are OpenAI's (and Anthropic's on ``/v1/messages``) and are only
sketched. The project runs schemathesis against it (tests/gateway/test_schemathesis.py).
"""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.request_schema import (
    CHAT_PARAMS,
    COMPLETION_PARAMS,
    EMBEDDING_PARAMS,
    RESPONSES_PARAMS,
    TOKENS_MAX,
)
from gateway.schema import ROLES

_STRING = {"type": "string"}
_OBJECT = {"type": "object"}
_MODEL = {"type": "string", "minLength": 1, "description": "a model name this gateway serves"}

_CHAT_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": sorted(ROLES)},
        "content": {"anyOf": [_STRING, {"type": "array", "items": _OBJECT}, {"type": "null"}]},
    },
}

CHAT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": _MODEL,
        "messages": {"type": "array", "minItems": 1, "items": _CHAT_MESSAGE},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        **CHAT_PARAMS,
    },
}

EMBEDDINGS_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": _MODEL,
        "input": {
            "anyOf": [
                _STRING,
                {"type": "array", "minItems": 1, "items": _STRING},
                {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                {"type": "array", "minItems": 1, "items": {"type": "array", "items": {"type": "integer"}}},
            ]
        },
        **EMBEDDING_PARAMS,
    },
}

COMPLETIONS_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        "model": _MODEL,
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        **COMPLETION_PARAMS,
    },
}

RESPONSES_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {"model": _MODEL, **RESPONSES_PARAMS},
}

_RESPONSE_ID = [{"name": "response_id", "in": "path", "required": True, "schema": _STRING}]
_LIST_QUERY = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
    {"name": "after", "in": "query", "schema": _STRING},
]

_ANTHROPIC_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["user", "assistant"]},
        "content": {"anyOf": [_STRING, {"type": "array", "items": _OBJECT}]},
    },
}

_ANTHROPIC_PROPERTIES: dict[str, Any] = {
    "model": _MODEL,
    "messages": {"type": "array", "minItems": 1, "items": _ANTHROPIC_MESSAGE},
    "system": {"anyOf": [_STRING, {"type": "array", "items": _OBJECT}]},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "stop_sequences": {"type": "array", "items": _STRING},
    "stream": {"type": "boolean"},
    "metadata": {"type": "object", "properties": {"user_id": _STRING}},
}

MESSAGES_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        **_ANTHROPIC_PROPERTIES,
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": TOKENS_MAX},
    },
}

COUNT_TOKENS_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": _ANTHROPIC_PROPERTIES,
}

_ERROR_STATUSES = {
    "400": "invalid request (the message, and `param`, name the field)",
    "401": "missing or unknown key",
    "403": "the key may not use this model",
    "404": "unknown model",
    "413": "body over server.max_body_bytes",
    "429": "rate limit or budget",
    "502": "the upstream failed",
    "503": "the upstream or the state store is unavailable, or the gateway is shutting down",
    "504": "the upstream timed out",
}


def _responses(*, stream: bool = False) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": _OBJECT}}
    if stream:
        ok["text/event-stream"] = {"schema": _STRING}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": ok}}
    for status, description in _ERROR_STATUSES.items():
        responses[status] = {"description": description, "content": {"application/json": {"schema": _OBJECT}}}
    return responses


def _post(summary: str, schema: dict[str, Any], *, stream: bool = False) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": _responses(stream=stream),
        }
    }


def _probe(summary: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    content = {"application/json": {"schema": _OBJECT}}
    return {
        "get": {
            "summary": summary,
            "security": [],
            "responses": {status: {"description": status, "content": content} for status in statuses},
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the client API (no admin route), built from the request schemas."""
    models = _responses()
    return {
        "openapi": "3.1.0",
        "info": {"title": "LLM gateway", "version": __version__},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            }
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/v1/chat/completions": _post("Chat completion (OpenAI)", CHAT_REQUEST, stream=True),
            "/v1/completions": _post("Text completion (OpenAI legacy)", COMPLETIONS_REQUEST, stream=True),
            "/v1/responses": _post("Response (OpenAI Responses API)", RESPONSES_REQUEST, stream=True),
            "/v1/responses/{response_id}": {
                method: {"summary": summary, "parameters": _RESPONSE_ID, "responses": models}
                for method, summary in (
                    ("get", "A stored response of this key"),
                    ("delete", "Delete a stored response of this key"),
                )
            },
            "/v1/responses/{response_id}/input_items": {
                "get": {
                    "summary": "The input items of a stored response of this key",
                    "parameters": [*_RESPONSE_ID, *_LIST_QUERY],
                    "responses": models,
                }
            },
            "/v1/embeddings": _post("Embeddings (OpenAI)", EMBEDDINGS_REQUEST),
            "/v1/messages": _post("Messages (Anthropic)", MESSAGES_REQUEST, stream=True),
            "/v1/messages/count_tokens": _post("Input token estimate (Anthropic)", COUNT_TOKENS_REQUEST),
            "/v1/models": {"get": {"summary": "The models the key may use", "responses": models}},
            "/v1/models/{model}": {
                "get": {
                    "summary": "One model",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": _STRING}],
                    "responses": models,
                }
            },
            "/health": _probe("Liveness", ("200",)),
            "/ready": _probe("Readiness", ("200", "503")),
        },
    }
