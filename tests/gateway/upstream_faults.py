"""A misbehaving upstream for the fault-injection tests: it answers whatever the test scripts, over an
httpx.MockTransport (no network), and a config around it with a priced model, a budget and a master key.

:func:`consistent` is the invariant every fault test ends with: whatever the upstream did, the key's budget
counter and the ledger agree on what the key spent, and no count or cost is negative or absurd.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from gateway.answers import MAX_TOKENS

MASTER = "sk-faults-master-0000"
KEY = "sk-faults-alice-0001"

Reply = Callable[[dict[str, Any]], httpx.Response]


def config_text(
    name: str,
    *,
    database: str = ":memory:",
    redis_url: str | None = None,
    cache: bool = False,
    limit_usd: str = "0.01",
) -> str:
    """Key ``name`` with a daily budget of ``limit_usd``; model ``priced`` at $1 per 1M tokens each way.

    The provider is named after the key too: route cooldowns live in the store, and tests sharing one Redis
    must not cool each other's route down.
    """
    state = (
        f"state: {{redis_url: '{redis_url}', on_error: fail_closed, timeout_seconds: 30}}"
        if redis_url
        else ""
    )
    return f"""
auth:
  master_key: {MASTER}
  keys:
    - {{name: {name}, key: {KEY}, budget: {{limit_usd: {limit_usd}, period: daily}}}}
providers:
  - {{name: up-{name}, type: openai, base_url: "http://upstream.test/v1", api_key: sk-upstream}}
models:
  - name: priced
    routes: [{{provider: up-{name}, model: up-model, pricing: {{input_per_1m: 1, output_per_1m: 1}}}}]
usage: {{database: "{database}"}}
features:
  budgets: {{default_max_tokens: 50}}
  routing: {{max_attempts: 1}}
  {"cache: {}" if cache else "cache: {enabled: false}"}
{state}
"""


def unique_name() -> str:
    """A key name of its own, so tests sharing one Redis never share a budget counter."""
    return f"k{uuid.uuid4().hex[:10]}"


def answer(usage: Any = None, *, content: str = "hello there", **overrides: Any) -> dict[str, Any]:
    """A well-formed chat completion carrying ``usage`` (left out when None)."""
    body: dict[str, Any] = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": "up-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }
    if usage is not None:
        body["usage"] = usage
    body.update(overrides)
    return body


def chunks(usage: Any = None, *, content: str = "hello there") -> list[Any]:
    """The chunks of a well-formed stream, a usage chunk last when ``usage`` is given."""
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "up-model"}
    events: list[Any] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if usage is not None:
        events.append({**base, "choices": [], "usage": usage})
    return events


def sse(events: list[Any], *, done: bool = True) -> httpx.Response:
    """An SSE answer of ``events`` (each JSON-encoded unless already a string)."""
    text = "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events)
    if done:
        text += "data: [DONE]\n\n"
    return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})


@dataclass
class ScriptedUpstream:
    """Answers each request with ``reply(body)``; counts the requests it got."""

    reply: Reply
    calls: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        """The transport to give ``create_app``."""
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        body = json.loads(request.content)
        self.bodies.append(body)
        return self.reply(body)


def master() -> dict[str, str]:
    """The master key's headers."""
    return {"authorization": f"Bearer {MASTER}"}


def alice() -> dict[str, str]:
    """The budgeted key's headers."""
    return {"authorization": f"Bearer {KEY}"}


def chat(content: str = "hi", **extra: Any) -> dict[str, Any]:
    """A chat body for model ``priced``."""
    return {"model": "priced", "messages": [{"role": "user", "content": content}], **extra}


async def consistent(client: httpx.AsyncClient, name: str) -> tuple[Decimal, dict[str, Any]]:
    """Assert that key ``name``'s budget counter and the ledger agree and hold sane values; returns
    (spent USD, ledger totals of the key)."""
    usage = await client.get("/admin/usage", params={"group_by": "key"}, headers=master())
    assert usage.status_code == 200, usage.text
    groups = {g["key"]: g for g in usage.json()["groups"]}
    totals = groups.get(name, {"cost_usd": "0", "prompt_tokens": 0, "completion_tokens": 0, "requests": 0})
    budgets = await client.get("/admin/budgets", headers=master())
    assert budgets.status_code == 200, budgets.text
    (budget,) = [b for b in budgets.json()["budgets"] if b["name"] == name]
    spent = Decimal(budget["spent_usd"])
    assert spent == Decimal(totals["cost_usd"]), (budget, totals)
    assert Decimal(0) <= spent <= Decimal(budget["limit_usd"]) * 100
    assert Decimal(budget["reserved_usd"]) == 0
    for column in ("prompt_tokens", "completion_tokens"):
        assert 0 <= totals[column] <= MAX_TOKENS * max(1, totals["requests"])
    return spent, totals
