"""A scripted OpenAI-compatible upstream for the cost and budget tests (an httpx.MockTransport, no network).

It answers with exactly ``max_tokens`` completion tokens and reports as prompt tokens the gateway's own upper
bound for the messages, so a request costs exactly what the budget reserved for it: tests can then say
precisely how many requests fit in a budget.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from gateway.ledger import UsageRecord
from gateway.token_estimate import max_prompt_tokens

MASTER = "sk-budget-master-0000"
ALICE = "sk-budget-alice-0001"
BOB = "sk-budget-bob-0002"
CAROL = "sk-budget-carol-0003"
FREE = "sk-budget-free-0004"


def config_text(
    *, database: str = ":memory:", redis_url: str | None = None, cache: bool = False, extra: str = ""
) -> str:
    """A gateway config: route `priced` at $1/$1000 per 1M, an upstream served by :class:`FakeUpstream`.

    alice: daily budget 0.1 USD (soft limit 50%); bob and carol share team `lab` with 0.05 USD per month;
    free: no budget.
    """
    state = state_yaml(redis_url)
    return f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: alice, key: {ALICE}, budget: {{limit_usd: 0.1, period: daily, soft_limit: 0.5}}}}
    - {{name: bob, key: {BOB}, team: lab}}
    - {{name: carol, key: {CAROL}, team: lab}}
    - {{name: free, key: {FREE}}}
teams:
  - {{name: lab, budget: {{limit_usd: 0.05, period: monthly}}}}
providers:
  - {{name: up, type: openai, base_url: "http://upstream.test/v1", api_key: sk-upstream}}
  - {{name: slow, type: mock, options: {{chunk_delay_ms: 50, chunk_size: 4, reply: "{"slow " * 100}"}}}}
models:
  - name: priced
    routes: [{{provider: up, model: up-model, pricing: {{input_per_1m: 1, output_per_1m: 1000}}}}]
  - name: gpt-4o-mini
    routes: [{{provider: up}}]
  - name: slow
    routes: [{{provider: slow, pricing: {{input_per_1m: 1, output_per_1m: 1000}}}}]
  - name: embed
    routes: [{{provider: slow, model: mock-embed, pricing: {{input_per_1m: 1000, output_per_1m: 0}}}}]
usage:
  database: "{database}"
features:
  budgets: {{default_max_tokens: 50}}
{"  cache: {}" if cache else ""}
{state}{extra}"""


def state_yaml(redis_url: str | None) -> str:
    """The ``state:`` block for ``redis_url`` (empty for the memory store)."""
    if not redis_url:
        return ""
    # fail_closed: an unreachable Redis must fail the test, not let requests through unbudgeted; a generous
    # timeout, because a busy test machine can take more than the default second to answer 100 requests.
    return f"state: {{redis_url: '{redis_url}', on_error: fail_closed, timeout_seconds: 30}}\n"


def usage_record(**overrides: Any) -> UsageRecord:
    """A ledger record of a 10 + 5 token chat completion by alice; ``overrides`` replace fields."""
    values: dict[str, Any] = {
        "ts": 0.0,
        "day": "2026-01-01",
        "request_id": "r",
        "key_name": "alice",
        "team": None,
        "model": "gpt-4o",
        "route": "openai/gpt-4o",
        "endpoint": "chat",
        "stream": False,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "usage_source": "reported",
        "cost_nanos": 75_000,
        "latency_ms": 30.0,
        "status": 200,
        "cache_hit": False,
    }
    values.update(overrides)
    return UsageRecord(**values)


def auth(key: str) -> dict[str, str]:
    """Bearer headers."""
    return {"authorization": f"Bearer {key}"}


def chat(content: str, model: str = "priced", **extra: Any) -> dict[str, Any]:
    """A chat body."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@dataclass
class FakeUpstream:
    """Answers chat completions with ``max_tokens`` tokens of 'x'; records the bodies it received."""

    report_usage: bool = True
    fail_status: int | None = None
    completion_tokens: int | None = None  # answer this many tokens instead of max_tokens
    delay: float = 0.0  # seconds each answer takes, so that concurrent requests overlap
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        """The transport to give ``create_app``."""
        return httpx.MockTransport(self.handle_async if self.delay else self.handle)

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.delay)
        return self.handle(request)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.fail_status is not None:
            return httpx.Response(self.fail_status, json={"error": {"message": "scripted failure"}})
        completion = (
            self.completion_tokens or body.get("max_completion_tokens") or body.get("max_tokens") or 7
        )
        prompt = max_prompt_tokens(body["messages"])
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        text = "x" * (completion * 4)
        base = {"id": "chatcmpl-fake", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            answer = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
            }
            if self.report_usage:
                answer["usage"] = usage
            return httpx.Response(200, json=answer)
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            *(
                {**chunk, "choices": [{"index": 0, "delta": {"content": text[i : i + 16]}}]}
                for i in range(0, len(text), 16)
            ),
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if self.report_usage and (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, content=sse.encode(), headers={"content-type": "text/event-stream"})
