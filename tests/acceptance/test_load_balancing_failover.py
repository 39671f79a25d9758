"""Acceptance: load balancing and failover (plan HIGH-load-balancing-failover), black box over HTTP.

The `lb-*` models of tests/acceptance/gateway.yaml each show one behaviour; their upstream model names say
which route answered (`x-gateway-route: provider/model`). Cooldowns are shared state that a live gateway
keeps between runs, so no test assumes a route is healthy or cooling when it starts: each drives the state
it needs, or accepts both states where either is correct.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest

pytestmark = pytest.mark.feature("load-balancing-failover")

URL = "/v1/chat/completions"
# The longest cooldown in gateway.yaml is 4 s; only a route that never recovers makes a test wait this long.
COOLDOWN_WAIT_SECONDS = 30.0


def chat(model: str, prompt: str | None = None, **extra: Any) -> dict[str, Any]:
    text = prompt or f"lb {uuid.uuid4().hex}"
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def sse(text: str) -> list[Any]:
    events = [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def wait_until_not_cooling(gateway, model: str, route: str) -> None:
    """Return once the gateway reports `route` of `model` no longer cooling down (its circuit not open).

    Waits on the gateway's own state (/admin/routes), sleeping the `cooling_for_s` it reports, rather than a
    guessed duration that a busy machine or a doubled cooldown outlasts.
    """
    deadline = time.monotonic() + COOLDOWN_WAIT_SECONDS
    while True:
        reply = gateway.client.get("/admin/routes", headers=gateway.admin_headers())
        assert reply.status_code == 200, reply.text
        (row,) = [r for r in reply.json()["models"][model]["routes"] if r["route"] == route]
        if row["state"] != "open":
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{route} still cooling down after {COOLDOWN_WAIT_SECONDS} s: {row}")
        time.sleep(max(0.05, float(row.get("cooling_for_s") or 0)))


@pytest.mark.feature("load-balancing-failover", step=(4, 6, 7))
def test_a_dead_route_is_hidden_from_clients(gateway) -> None:
    for _ in range(12):
        body = chat("lb-failover")
        response = gateway.client.post(URL, json=body, headers=gateway.headers())
        assert response.status_code == 200, response.text
        assert response.headers["x-gateway-route"] == "mock/lb-live-route"
        assert response.headers["x-gateway-attempts"] in ("1", "2")
        assert response.json()["choices"][0]["message"]["content"] == body["messages"][0]["content"]


@pytest.mark.feature("load-balancing-failover", step=(4, 6, 7))
def test_failover_happens_on_the_request_that_hit_the_dead_route(gateway) -> None:
    # Weighted random picks the dead route first for about half of the requests while it is not cooling
    # down; before each request, wait out any cooldown, then look for a request that needed two attempts.
    attempts: list[str] = []
    for _ in range(30):
        wait_until_not_cooling(gateway, "lb-failover", "lb-dead/lb-dead-route")
        response = gateway.client.post(URL, json=chat("lb-failover"), headers=gateway.headers())
        assert response.status_code == 200
        attempts.append(response.headers["x-gateway-attempts"])
        if "2" in attempts:
            break
    assert "2" in attempts


@pytest.mark.feature("load-balancing-failover", step=(1, 2, 7))
def test_weights_split_the_traffic(gateway) -> None:
    routes = Counter()
    for _ in range(200):
        response = gateway.client.post(URL, json=chat("lb-weighted"), headers=gateway.headers())
        assert response.status_code == 200
        routes[response.headers["x-gateway-route"]] += 1
    # 3:1 over 200 requests: expected 150/50. Heavy under 1.5x light (at most 120) is ~5 sigma away.
    assert set(routes) == {"mock/lb-heavy", "mock/lb-light"}
    assert routes["mock/lb-heavy"] > 1.5 * routes["mock/lb-light"]


@pytest.mark.feature("load-balancing-failover", step=(2, 7))
def test_weight_zero_drains_a_route(gateway) -> None:
    for _ in range(20):
        response = gateway.client.post(URL, json=chat("lb-drained"), headers=gateway.headers())
        assert response.status_code == 200
        assert response.headers["x-gateway-route"] == "mock/lb-kept"
        assert response.headers["x-gateway-attempts"] == "1"


@pytest.mark.feature("load-balancing-failover", step=(1, 4, 7))
def test_fallback_alias_answers_when_every_route_fails(gateway) -> None:
    body = chat("lb-primary")
    response = gateway.client.post(URL, json=body, headers=gateway.headers())
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-route"] == "mock/lb-backup-route"
    assert response.json()["choices"][0]["message"]["content"] == body["messages"][0]["content"]


@pytest.mark.feature("load-balancing-failover", step=(4, 7))
def test_client_errors_from_upstream_are_not_retried(gateway) -> None:
    response = gateway.client.post(URL, json=chat("lb-rejecting"), headers=gateway.headers())
    assert response.status_code == 400
    assert response.headers["x-gateway-attempts"] == "1"
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.feature("load-balancing-failover", step=(3, 7))
def test_a_cooling_model_fails_fast_with_503_and_retry_after(gateway) -> None:
    seen = []
    for _ in range(5):
        response = gateway.client.post(URL, json=chat("lb-cooling"), headers=gateway.headers())
        seen.append(response.status_code)
        if response.status_code == 503 and response.json()["error"]["code"] == "all_routes_cooling_down":
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["x-gateway-attempts"] == "0"
            if gateway.master_key is not None:
                routes = gateway.client.get("/admin/routes", headers=gateway.admin_headers()).json()
                (route,) = routes["models"]["lb-cooling"]["routes"]
                assert route["route"] == "lb-dead/lb-cooling-route"
                assert route["state"] in ("open", "half_open")  # half-open once the 2 s have passed
            return
        # Before the route cooled down, the failure is the upstream's own, after retries.
        assert response.status_code == 502
        assert int(response.headers["x-gateway-attempts"]) >= 1
    pytest.fail(f"the dead route never cooled down: {seen}")


@pytest.mark.feature("load-balancing-failover", step=(5, 7))
def test_stream_fails_over_before_the_first_chunk(gateway) -> None:
    body = chat("lb-failover", stream=True)
    response = gateway.client.post(URL, json=body, headers=gateway.headers())
    assert response.status_code == 200
    assert response.headers["x-gateway-route"] == "mock/lb-live-route"
    events = sse(response.text)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices"))
    assert text == body["messages"][0]["content"]


@pytest.mark.feature("load-balancing-failover", step=(5, 6, 7))
def test_a_stream_broken_after_the_first_chunk_ends_with_an_error_event(gateway) -> None:
    for _ in range(3):
        response = gateway.client.post(
            URL, json=chat("lb-stream-break", stream=True), headers=gateway.headers()
        )
        if response.status_code == 503:  # cooling down after earlier breaks: wait it out
            wait_until_not_cooling(gateway, "lb-stream-break", "lb-breaks/lb-breaking-route")
            continue
        assert response.status_code == 200
        events = sse(response.text)
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        assert "[DONE]" not in events  # never a clean end for a broken stream
        assert "error" in events[-1]
        assert events[-1]["error"]["type"] == "upstream_error"
        assert response.headers["x-gateway-attempts"] == "1"  # no failover once text reached the client
        return
    pytest.fail("the breaking route stayed in cooldown")


@pytest.mark.feature("load-balancing-failover", step=(1, 7))
def test_admin_routes_lists_routes_weights_and_fallbacks(gateway) -> None:
    response = gateway.client.get("/admin/routes", headers=gateway.admin_headers())
    assert response.status_code == 200
    models = response.json()["models"]
    drained = {r["route"]: r for r in models["lb-drained"]["routes"]}
    assert drained["mock/lb-kept"]["weight"] == 1
    assert drained["lb-dead/lb-drained-route"]["weight"] == 0
    assert models["lb-primary"]["fallbacks"] == ["lb-backup"]
    assert all(r["state"] in ("closed", "open", "half_open") for m in models.values() for r in m["routes"])
