"""Hostile client input: surrogates, deep nesting, huge numbers, wrong types and out-of-range parameters are
a 400 naming the field on every endpoint and frame type, never a 500 (and never a dead WebSocket)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_testing import KEY, MASTER_KEY, TEST_CONFIG, auth, chat, run_server
from websockets.sync.client import connect

from gateway.app import create_app
from gateway.config import parse_config

pytestmark = pytest.mark.anyio

SURROGATE = '"\\ud800"'  # a lone surrogate, as JSON text: valid JSON, not encodable as UTF-8


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def body_with(raw_value: str, where: str) -> bytes:
    """A chat body (JSON text) with ``raw_value`` (JSON text) spliced in at ``where``."""
    template = {
        "model": '{"model": %s, "messages": [{"role": "user", "content": "hi"}]}',
        "content": '{"model": "echo", "messages": [{"role": "user", "content": %s}]}',
        "user": '{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "user": %s}',
        "metadata": '{"model": "echo", "messages": [{"role": "user", "content": "hi"}], '
        '"metadata": {"k": %s}}',
        "key": '{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "metadata": {%s: "v"}}',
    }[where]
    return template.replace("%s", raw_value).encode()


MESSAGES = '{"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": %s}]}'
COUNT = '{"model": "echo", "messages": [{"role": "user", "content": %s}]}'
SURROGATE_CASES = [
    ("/v1/chat/completions", body_with(SURROGATE, "model"), "model"),
    ("/v1/chat/completions", body_with(SURROGATE, "content"), "messages[0].content"),
    ("/v1/chat/completions", body_with(SURROGATE, "user"), "user"),
    ("/v1/chat/completions", body_with(SURROGATE, "metadata"), "metadata.k"),
    ("/v1/chat/completions", body_with(SURROGATE, "key"), "metadata"),
    ("/v1/embeddings", ('{"model": "echo", "input": [%s]}'.replace("%s", SURROGATE)).encode(), "input[0]"),
    (
        "/v1/messages",
        MESSAGES.replace("%s", SURROGATE).encode(),
        "messages[0].content",
    ),
    (
        "/v1/messages/count_tokens",
        (COUNT.replace("%s", SURROGATE)).encode(),
        "messages[0].content",
    ),
]


def param_of(response: httpx.Response) -> str:
    """The field an error names: ``param`` (OpenAI envelope) or the message (Anthropic's has no param)."""
    error = response.json()["error"]
    return str(error.get("param") or error["message"])


@pytest.mark.parametrize(("path", "content", "field"), SURROGATE_CASES, ids=[c[2] for c in SURROGATE_CASES])
async def test_a_lone_surrogate_is_a_400_naming_the_field(
    client: httpx.AsyncClient, path: str, content: bytes, field: str
) -> None:
    response = await client.post(
        path, content=content, headers={**auth(), "content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert field in param_of(response)
    assert "surrogate" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/messages"])
async def test_deep_nesting_is_a_400_on_every_endpoint(path: str) -> None:
    # Bigger than the test config's 4 KiB limit allows: a gateway with the default body limit.
    config = parse_config(TEST_CONFIG.replace("max_body_bytes: 4096", "max_body_bytes: 100000"))
    app = create_app(config)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        for depth in (65, 480, 5000):
            content = body_with(nested(depth), "metadata")
            response = await client.post(path, content=content, headers=auth())
            assert response.status_code == 400, (depth, response.text)
            assert "nested" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("temperature", -1, "temperature"),
        ("temperature", 2.5, "temperature"),
        ("temperature", 1e400, "temperature"),  # parsed as infinity
        ("top_p", 1.5, "top_p"),
        ("top_p", -0.1, "top_p"),
        ("n", 0, "n"),
        ("n", 129, "n"),
        ("presence_penalty", 3, "presence_penalty"),
        ("frequency_penalty", -2.5, "frequency_penalty"),
        ("max_tokens", 0, "max_tokens"),
        ("max_tokens", 10**30, "max_tokens"),
        ("max_completion_tokens", -5, "max_completion_tokens"),
        ("seed", 10**30, "seed"),
        ("seed", "1", "seed"),
        ("tools", [1], "tools[0]"),
        ("tools", [{"type": "function", "function": {"name": 5}}], "tools[0].function.name"),
        ("tool_choice", 5, "tool_choice"),
        ("user", 5, "user"),
        ("metadata", [], "metadata"),
        ("metadata", {"k": 1}, "metadata.k"),
        ("logprobs", "yes", "logprobs"),
        ("top_logprobs", 21, "top_logprobs"),
        ("logit_bias", {"50256": 101}, "logit_bias.50256"),
        ("stop", ["a", 5], "stop"),
        ("parallel_tool_calls", "no", "parallel_tool_calls"),
        ("response_format", "json", "response_format"),
    ],
)
async def test_documented_parameter_ranges_are_400_naming_the_field(
    client: httpx.AsyncClient, field: str, value: Any, named: str
) -> None:
    content = json.dumps(chat(**{field: value}), allow_nan=True).replace("Infinity", "1e400")
    response = await client.post("/v1/chat/completions", content=content, headers=auth())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == named
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 0),
        ("temperature", 2),
        ("top_p", 0),
        ("top_p", 1.0),
        ("n", 1),
        ("presence_penalty", -2),
        ("seed", -(2**63)),
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
        ("tool_choice", "auto"),
        ("tool_choice", {"type": "function", "function": {"name": "f"}}),
        ("user", "user-1"),
        ("metadata", {"k": "v"}),
        ("logit_bias", {"50256": -100}),
        ("response_format", {"type": "json_object"}),
    ],
)
async def test_values_inside_the_ranges_pass(client: httpx.AsyncClient, field: str, value: Any) -> None:
    response = await client.post("/v1/chat/completions", json=chat(**{field: value}), headers=auth())
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"model": "echo", "input": [1.5]}, "input"),
        ({"model": "echo", "input": [10**30]}, "input[0]"),
        ({"model": "echo", "input": "x", "dimensions": 10**30}, "dimensions"),
        ({"model": "echo", "input": "x", "user": []}, "user"),
        ({"model": "echo", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
async def test_embeddings_wrong_types_and_huge_numbers_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], named: str
) -> None:
    response = await client.post("/v1/embeddings", json=body, headers=auth())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == named


async def test_a_trailing_slash_never_redirects_to_the_clients_host(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/admin/config/"),
        ("POST", "/v1/chat/completions/"),
        ("GET", "/v1/models/"),
    ):
        response = await client.request(
            method, path, headers={**auth(MASTER_KEY), "host": "evil.example.com"}, json=chat()
        )
        location = response.headers.get("location", "")
        assert "evil.example.com" not in location, (path, location)
        assert not location or location.startswith("/"), (path, location)


@pytest.fixture(scope="module")
def ws_base() -> Iterator[str]:
    with run_server(create_app(parse_config(TEST_CONFIG, "ws.yaml")), ws="auto") as base:
        yield base.replace("http://", "ws://", 1) + "/v1/ws/chat"


def frame_of(ws: Any) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=10))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            '{"type": "chat.request", "id": "a", "body": {"model": "echo", "metadata": ' + nested(480) + "}}",
            "nested",
        ),
        (nested(5000), "nested"),
        (
            '{"type": "chat.request", "id": "a", "body": {"model": "echo", "messages": '
            '[{"role": "user", "content": ' + SURROGATE + "}]}}",
            "body.messages[0].content",
        ),
        ('{"type": "chat.request", "id": ' + SURROGATE + ', "body": {}}', "id"),
        ('{"type": ' + SURROGATE + "}", "type"),
        (
            '{"type": "chat.request", "id": "a", "body": {"model": "echo", "temperature": -1, "messages": '
            '[{"role": "user", "content": "x"}]}}',
            "temperature",
        ),
    ],
    ids=["deep body", "deep frame", "surrogate in body", "surrogate id", "surrogate type", "range"],
)
def test_a_hostile_websocket_frame_gets_an_error_frame_and_the_socket_stays_open(
    ws_base: str, text: str, named: str
) -> None:
    with connect(ws_base, additional_headers=auth(KEY), open_timeout=10) as ws:
        ws.send(text)
        error = frame_of(ws)
        assert error["type"] == "chat.error", error
        assert error["status"] == 400
        assert named in (error["error"]["error"]["param"] or "") + error["error"]["error"]["message"]
        # Still open and serving.
        ws.send('{"type": "ping"}')
        assert frame_of(ws) == {"type": "pong"}
        ws.send(json.dumps({"type": "chat.request", "id": "ok", "body": chat("still here")}))
        while (f := frame_of(ws))["type"] != "chat.done":
            assert f["type"] == "chat.chunk", f
