"""Parameter honesty (gateway/params.py): per adapter, a table of chat parameters and what becomes of each:
passed through, translated, or refused with a 400 naming it, and dropped and reported when asked.

Every provider type runs through the real app against one recording fake upstream (httpx.MockTransport),
so the table checks what each upstream actually received, not what an adapter claims.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from gateway_testing import KEY, auth, chat, serve

from gateway.config import GatewayConfig, parse_config
from gateway.params import NEUTRAL, ParamSupport
from gateway.providers.anthropic import ANTHROPIC_PARAMS
from gateway.providers.cohere import COHERE_PARAMS

pytestmark = pytest.mark.anyio

OPENAI_ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
ANTHROPIC_ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 1, "output_tokens": 1},
}
COHERE_ANSWER = {
    "id": "co1",
    "finish_reason": "COMPLETE",
    "message": {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
    "usage": {"tokens": {"input_tokens": 1, "output_tokens": 1}},
}


def _anthropic_events() -> bytes:
    events = [
        {"type": "message_start", "message": {**ANTHROPIC_ANSWER, "content": []}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "ok"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    ]
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


class Upstreams:
    """Every upstream kind at once, told apart by path; records the last body each received."""

    def __init__(self) -> None:
        self.sent: dict[str, dict[str, Any]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        path = request.url.path
        if path == "/v1/messages":
            self.sent["anthropic"] = body
            if body.get("stream"):
                return httpx.Response(
                    200, content=_anthropic_events(), headers={"content-type": "text/event-stream"}
                )
            return httpx.Response(200, json=ANTHROPIC_ANSWER)
        if path == "/v2/chat":
            self.sent["cohere"] = body
            return httpx.Response(200, json=COHERE_ANSWER)
        kind = "azure" if path.startswith("/openai/deployments/") else "openai"
        self.sent[kind] = body
        return httpx.Response(200, json=OPENAI_ANSWER)


def config(extra: str = "", **drop: str) -> GatewayConfig:
    """One alias per provider kind; ``drop`` sets drop_params on a route (``route=``) or a model."""
    route = f", drop_params: {drop['route']}" if "route" in drop else ""
    model = f", drop_params: {drop['model']}" if "model" in drop else ""
    return parse_config(
        f"""
auth:
  keys: [{{name: alice, key: {KEY}}}]
providers:
  - {{name: anthropic, type: anthropic, base_url: "https://a.test", api_key: k}}
  - {{name: cohere, type: cohere, base_url: "https://c.test", api_key: k}}
  - {{name: openai, type: openai, base_url: "https://o.test/v1", api_key: k}}
  - {{name: azure, type: azure, base_url: "https://z.test", api_key: k, options: {{api_version: v1}}}}
  - {{name: mock, type: mock}}
models:
  - {{name: anthropic, routes: [{{provider: anthropic, model: claude{route}}}]{model}}}
  - {{name: cohere, routes: [{{provider: cohere, model: command-r}}]}}
  - {{name: openai, routes: [{{provider: openai, model: gpt-4o}}]}}
  - {{name: azure, routes: [{{provider: azure, model: gpt-4o}}]}}
  - {{name: mock, routes: [{{provider: mock, model: mock-echo}}]}}
  - {{name: mixed, routes: [{{provider: anthropic, model: claude}}, {{provider: openai, model: gpt-4o}}]}}
usage: {{database: ":memory:"}}
{extra}"""
    )


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]

# parameter, value, then per provider: "pass" (received as is), "translated" (received under the upstream's
# own name or shape), "refused" (400 naming it; dropped and reported with x-gateway-drop-params).
TABLE: list[tuple[str, Any, dict[str, str]]] = [
    ("seed", 7, {"anthropic": "refused", "cohere": "pass", "openai": "pass", "azure": "pass", "mock": "ok"}),
    ("n", 2, {"anthropic": "refused", "cohere": "refused", "openai": "pass", "azure": "pass", "mock": "ok"}),
    ("n", 1, {"anthropic": "ok", "cohere": "ok", "openai": "pass", "azure": "pass", "mock": "ok"}),
    ("logprobs", True, {"anthropic": "refused", "cohere": "refused", "openai": "pass", "mock": "ok"}),
    ("logprobs", False, {"anthropic": "ok", "cohere": "ok", "openai": "pass"}),
    ("response_format", {"type": "json_object"}, {"anthropic": "refused", "cohere": "refused", "mock": "ok"}),
    ("response_format", {"type": "text"}, {"anthropic": "ok", "cohere": "ok", "openai": "pass"}),
    ("logit_bias", {"50256": -100}, {"anthropic": "refused", "cohere": "refused", "azure": "pass"}),
    ("presence_penalty", 0.5, {"anthropic": "refused", "cohere": "pass", "openai": "pass"}),
    ("user", "u-1", {"anthropic": "translated", "cohere": "refused", "openai": "pass"}),
    ("top_p", 0.5, {"anthropic": "pass", "cohere": "translated", "openai": "pass"}),
    ("stop", "END", {"anthropic": "translated", "cohere": "translated", "openai": "pass"}),
    ("new_openai_param", "x", {"anthropic": "refused", "cohere": "refused", "openai": "pass", "mock": "ok"}),
]  # fmt: skip

TRANSLATED = {("anthropic", "user"): "metadata", ("anthropic", "stop"): "stop_sequences"}
TRANSLATED.update({("cohere", "top_p"): "p", ("cohere", "stop"): "stop_sequences"})

CASES = [(name, value, kind, outcome) for name, value, row in TABLE for kind, outcome in row.items()]


@pytest.mark.parametrize(("name", "value", "kind", "outcome"), CASES)
async def test_parameter_table(name: str, value: Any, kind: str, outcome: str) -> None:
    upstreams = Upstreams()
    body = chat("hi", model=kind, **{name: value})
    async with serve(config(), transport=httpx.MockTransport(upstreams)) as client:
        reply = await client.post("/v1/chat/completions", headers=auth(), json=body)
        if outcome == "refused":
            assert reply.status_code == 400, reply.text
            error = reply.json()["error"]
            assert error["code"] == "unsupported_parameter" and error["param"] == name
            assert f"'{name}'" in error["message"] and f"'{kind}'" in error["message"]
            assert kind not in upstreams.sent  # refused before any upstream call
            dropped = await client.post(
                "/v1/chat/completions", headers={**auth(), "x-gateway-drop-params": "true"}, json=body
            )
            assert dropped.status_code == 200, dropped.text
            assert dropped.headers["x-gateway-dropped-params"] == name
            assert name not in upstreams.sent[kind]
            return
    assert reply.status_code == 200, reply.text
    assert "x-gateway-dropped-params" not in reply.headers
    sent = upstreams.sent.get(kind)
    if outcome == "pass":
        assert sent is not None and sent[name] == value
    elif outcome == "translated":
        assert sent is not None and name not in sent and TRANSLATED[(kind, name)] in sent


async def test_drop_params_in_the_config_route_model_and_globally() -> None:
    body = chat("hi", model="anthropic", seed=7, n=3)
    for cfg in (
        config(route="true"),
        config(model="true"),
        config("features: {routing: {drop_params: true}}"),
    ):
        upstreams = Upstreams()
        async with serve(cfg, transport=httpx.MockTransport(upstreams)) as client:
            reply = await client.post("/v1/chat/completions", headers=auth(), json=body)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-gateway-dropped-params"] == "n,seed"
        assert "seed" not in upstreams.sent["anthropic"] and "n" not in upstreams.sent["anthropic"]
    # A route's false wins over a global true.
    cfg = config("features: {routing: {drop_params: true}}", route="false")
    async with serve(cfg, transport=httpx.MockTransport(Upstreams())) as client:
        reply = await client.post("/v1/chat/completions", headers=auth(), json=body)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "n"


async def test_the_router_skips_a_route_that_cannot_honour_a_parameter() -> None:
    upstreams = Upstreams()
    async with serve(config(), transport=httpx.MockTransport(upstreams)) as client:
        for _ in range(6):  # weighted 50/50: without the filter, about half would be refused
            reply = await client.post(
                "/v1/chat/completions", headers=auth(), json=chat("hi", model="mixed", seed=1)
            )
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-gateway-route"] == "openai/gpt-4o"
            assert "x-gateway-dropped-params" not in reply.headers
    assert "anthropic" not in upstreams.sent


async def test_a_stream_reports_its_drops_in_its_headers() -> None:
    async with serve(config(route="true"), transport=httpx.MockTransport(Upstreams())) as client:
        body = chat(
            "hi", model="anthropic", stream=True, logprobs=True, tools=TOOLS, parallel_tool_calls=False
        )
        async with client.stream("POST", "/v1/chat/completions", headers=auth(), json=body) as reply:
            assert reply.status_code == 200
            assert reply.headers["x-gateway-dropped-params"] == "logprobs"
            text = "".join([part async for part in reply.aiter_text()])
    assert '"content":"ok"' in text and text.endswith("data: [DONE]\n\n")


def test_declared_tables_hold_no_gateway_handled_or_neutral_only_names() -> None:
    for support in (ANTHROPIC_PARAMS, COHERE_PARAMS):
        assert support.supported is not None and "messages" not in support.supported
    assert ParamSupport().unsupported({"seed": 1}) == []
    assert ParamSupport(frozenset()).unsupported({"seed": None, "n": 1, "stream": True}) == []
    assert all(NEUTRAL[name](value) for name, value in [("n", 1), ("logprobs", False), ("store", False)])


async def test_messages_route_drops_and_reports_what_a_route_cannot_honour() -> None:
    """Anthropic clients send metadata.user_id (canonical `user`) on every request: Cohere lacks it."""
    upstreams = Upstreams()
    body = {
        "model": "cohere",
        "max_tokens": 5,
        "metadata": {"user_id": "u-1"},
        "top_k": 3,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with serve(config(), transport=httpx.MockTransport(upstreams)) as client:
        reply = await client.post("/v1/messages", headers={"x-api-key": KEY}, json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-gateway-dropped-params"] == "top_k,user"
    assert "user" not in upstreams.sent["cohere"]
