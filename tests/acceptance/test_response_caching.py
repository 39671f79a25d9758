"""Acceptance: response caching (plan HIGH-response-caching), black box over HTTP.

Only the models `mock-cached` and `mock-cached-broken` have the cache on (tests/acceptance/gateway.yaml);
every prompt is unique, so the tests hold against a live gateway that already served earlier runs.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.feature("response-caching")

URL = "/v1/chat/completions"
OTHER_TENANT = "sk-acceptance-cache-b"


def chat(prompt: str, model: str = "mock-cached", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def sse(text: str) -> list[Any]:
    events = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def assert_stored(gateway, body: dict[str, Any], key: str | None = None) -> None:
    """The cache stores `body`'s answer: a MISS, then a HIT for the same request.

    Tests of what must *not* be served from the cache call this first; without it they would pass just as
    well with a cache that never stores anything.
    """
    first = gateway.client.post(URL, json=body, headers=gateway.headers(key))
    second = gateway.client.post(URL, json=body, headers=gateway.headers(key))
    assert first.status_code == second.status_code == 200, first.text
    assert [first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]] == ["MISS", "HIT"]


@pytest.mark.feature("response-caching", step=(1, 4, 7))
def test_second_identical_request_is_a_hit(gateway) -> None:
    body = chat(unique("cache me"))
    first = gateway.client.post(URL, json=body, headers=gateway.headers())
    second = gateway.client.post(URL, json=body, headers=gateway.headers())
    assert first.status_code == second.status_code == 200
    assert first.headers["x-gateway-cache"] == "MISS"
    assert second.headers["x-gateway-cache"] == "HIT"
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["id"] != first.json()["id"]


@pytest.mark.feature("response-caching", step=(6, 7))
def test_a_hit_reports_the_tokens_it_saved(gateway) -> None:
    body = chat(unique("count what I saved"))
    first = gateway.client.post(URL, json=body, headers=gateway.headers()).json()
    usage = gateway.client.post(URL, json=body, headers=gateway.headers()).json()["usage"]
    assert usage["total_tokens"] == 0
    assert usage["saved_total_tokens"] == first["usage"]["total_tokens"] > 0


@pytest.mark.feature("response-caching", step=(2, 7))
def test_another_tenant_never_gets_the_cached_answer(gateway) -> None:
    body = chat(unique("mine only"))
    assert_stored(gateway, body)
    other = gateway.client.post(URL, json=body, headers=gateway.headers(OTHER_TENANT))
    assert other.status_code == 200
    assert other.headers["x-gateway-cache"] == "MISS"


@pytest.mark.feature("response-caching", step=(2, 7))
def test_a_different_parameter_is_a_different_entry(gateway) -> None:
    prompt = unique("params")
    assert_stored(gateway, chat(prompt, temperature=0))
    warmer = gateway.client.post(URL, json=chat(prompt, temperature=0.7), headers=gateway.headers())
    assert warmer.headers["x-gateway-cache"] == "MISS"


@pytest.mark.feature("response-caching", step=(4, 7))
def test_cache_control_no_store_and_no_cache(gateway) -> None:
    body = chat(unique("control"))
    no_store = {**gateway.headers(), "Cache-Control": "no-store"}
    assert gateway.client.post(URL, json=body, headers=no_store).headers["x-gateway-cache"] == "BYPASS"
    assert gateway.client.post(URL, json=body, headers=gateway.headers()).headers["x-gateway-cache"] == "MISS"
    no_cache = {**gateway.headers(), "Cache-Control": "no-cache"}
    assert gateway.client.post(URL, json=body, headers=no_cache).headers["x-gateway-cache"] == "BYPASS"
    assert gateway.client.post(URL, json=body, headers=gateway.headers()).headers["x-gateway-cache"] == "HIT"


@pytest.mark.feature("response-caching", step=(1, 4, 7))
def test_per_request_ttl_zero_stores_nothing(gateway) -> None:
    body = chat(unique("ttl zero"))
    headers = {**gateway.headers(), "x-gateway-cache-ttl": "0"}
    assert gateway.client.post(URL, json=body, headers=headers).headers["x-gateway-cache"] == "MISS"
    # Nothing was stored: the same request without the header is a MISS again, and is stored as usual.
    assert_stored(gateway, body)


@pytest.mark.feature("response-caching", step=(5, 7))
def test_a_stream_hit_is_a_valid_sse_stream(gateway) -> None:
    body = chat(unique("stream"), stream=True, stream_options={"include_usage": True})
    first = gateway.client.post(URL, json=body, headers=gateway.headers())
    assert first.headers["x-gateway-cache"] == "MISS"
    original = sse(first.text)
    second = gateway.client.post(URL, json=body, headers=gateway.headers())
    assert second.headers["x-gateway-cache"] == "HIT"
    assert second.headers["content-type"].startswith("text/event-stream")
    chunks = sse(second.text)
    assert chunks[-1] == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])

    def text(events: list[Any]) -> str:
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1] if c["choices"])

    assert text(chunks) == text(original)
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["saved_total_tokens"] > 0
    plain = gateway.client.post(URL, json=chat(body["messages"][0]["content"]), headers=gateway.headers())
    assert plain.headers["x-gateway-cache"] == "HIT"


@pytest.mark.feature("response-caching", step=(4, 7))
def test_errors_are_not_cached(gateway) -> None:
    prompt = unique("fails")
    assert_stored(gateway, chat(prompt))  # the same prompt's answer is stored where the upstream works
    body = chat(prompt, model="mock-cached-broken")
    for _ in range(2):
        reply = gateway.client.post(URL, json=body, headers=gateway.headers())
        assert reply.status_code == 503
        assert reply.headers.get("x-gateway-cache") == "MISS"  # looked up, found nothing stored
