"""Acceptance: rate limiting (plan HIGH-rate-limiting), black box over HTTP.

The keys `ratelimit-rpm` (3 requests per minute) and `ratelimit-tpm` (2,000 tokens per minute) exist only for
these tests (tests/acceptance/gateway.yaml). A live gateway may still hold their state from an earlier run, so
the tests count how many requests pass before the first 429 instead of assuming a fresh allowance.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from held_in_flight import overlapping

pytestmark = pytest.mark.feature("rate-limiting")

URL = "/v1/chat/completions"
RPM_KEY = "sk-acceptance-rl-rpm"
TPM_KEY = "sk-acceptance-rl-tpm"


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-limited", "messages": [{"role": "user", "content": uuid.uuid4().hex}], **extra}


@pytest.mark.feature("rate-limiting", step=(2, 5, 6))
def test_requests_over_the_limit_get_a_well_formed_429(gateway) -> None:
    replies = []
    for _ in range(4):
        reply = gateway.client.post(URL, json=chat(), headers=gateway.headers(RPM_KEY))
        replies.append(reply)
        if reply.status_code == 429:
            break
    statuses = [r.status_code for r in replies]
    assert statuses[-1] == 429 and set(statuses[:-1]) <= {200}
    # Each admitted request shows one fewer remaining (after a fresh minute: 2, 1, 0).
    remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in replies[:-1]]
    assert all(a == b + 1 for a, b in itertools.pairwise(remaining))
    assert all(0 <= n < 3 for n in remaining)
    refused = replies[-1]
    error = refused.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"
    assert RPM_KEY not in refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.feature("rate-limiting", step=(5, 6))
def test_every_response_carries_the_openai_limit_headers(gateway) -> None:
    reply = gateway.client.post(URL, json=chat(max_tokens=10), headers=gateway.headers(TPM_KEY))
    assert reply.status_code == 200
    assert reply.headers["x-ratelimit-limit-tokens"] == "2000"
    assert 0 <= int(reply.headers["x-ratelimit-remaining-tokens"]) < 2000
    assert reply.headers["x-ratelimit-reset-tokens"][-1] == "s"  # e.g. "250ms", "1.5s", "1m0s"


@pytest.mark.feature("rate-limiting", step=(4, 6))
def test_a_request_larger_than_the_token_limit_is_refused(gateway) -> None:
    reply = gateway.client.post(URL, json=chat(max_tokens=5000), headers=gateway.headers(TPM_KEY))
    assert reply.status_code == 429
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"
    assert "tokens" in reply.json()["error"]["message"]
    assert reply.headers["x-ratelimit-limit-tokens"] == "2000"


@pytest.mark.feature("rate-limiting", step=(1, 6))
def test_keys_without_limits_are_not_limited(gateway) -> None:
    for _ in range(5):
        reply = gateway.client.post(URL, json=chat(), headers=gateway.headers())
        assert reply.status_code == 200
        assert "x-ratelimit-limit-requests" not in reply.headers


@pytest.mark.feature("rate-limiting", step=(1, 5, 6))
def test_max_concurrent_refuses_a_second_request_in_flight(gateway) -> None:
    # mock-limited-gated answers once two requests wait in it (held_in_flight.py): the admitted request is
    # still in flight when the other is checked, whichever comes first.
    key = "sk-acceptance-rl-concurrent"
    body = {"model": "mock-limited-gated", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
    replies = overlapping(gateway, body, key, count=2)
    assert sorted(r.status_code for r in replies) == [200, 429]
    refused = next(r for r in replies if r.status_code == 429)
    assert "concurrent" in refused.json()["error"]["message"]
    assert refused.headers["retry-after"] == "1"
    # Both finished: the slot is free again, for one request at a time.
    again = overlapping(gateway, body, key, count=2)
    assert sorted(r.status_code for r in again) == [200, 429]


@pytest.mark.feature("rate-limiting", step=(1, 6))
def test_a_shared_model_limit_counts_every_key_together(gateway) -> None:
    keys = ["sk-acceptance-rl-shared-a", "sk-acceptance-rl-shared-b"]
    body = {"model": "mock-limited-shared", "messages": [{"role": "user", "content": "x"}]}
    replies = []
    for i in range(3):
        reply = gateway.client.post(URL, json=body, headers=gateway.headers(keys[i % 2]))
        replies.append(reply)
        if reply.status_code == 429:
            break
    # The limit is 2 per minute for both keys together: by the third request at the latest, one is refused.
    assert replies[-1].status_code == 429
    assert "model 'mock-limited-shared'" in replies[-1].json()["error"]["message"]
    assert replies[-1].headers["x-ratelimit-limit-requests"] == "2"
