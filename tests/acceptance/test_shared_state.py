"""Acceptance: two replicas sharing one Redis behave as one gateway (cache, rate limits, budgets, cooldowns).

The HIGH features each promised a Redis implementation of their part of the store interface next to the
in-memory one; this is where that step is verified black-box. The module starts its own `redis-server` and
two in-process gateways serving `gateway.yaml` with `state.redis_url` pointed at it, and talks to both over
HTTP. Against a live gateway (`--gateway-url`) it is skipped: it needs replicas it starts itself.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from redis_server import RedisServer
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import load_config

SHARED_CONFIG = Path(__file__).with_name("gateway.yaml")
URL = "/v1/chat/completions"
KEY = "sk-acceptance"
BUDGET_KEY = "sk-acceptance-shared-budget"


@dataclass(frozen=True)
class Replicas:
    """Two gateways sharing one Redis."""

    a: httpx.Client
    b: httpx.Client


@pytest.fixture(scope="module")
def replicas(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    if request.config.getoption("gateway_url"):
        pytest.skip("starts two replicas of its own on one Redis; a live gateway's store is its own")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")
    data = yaml.safe_load(SHARED_CONFIG.read_text())
    with RedisServer() as redis, ExitStack() as stack:
        data["state"] = {"redis_url": redis.url}
        # A budget of its own, small enough for a few requests to use up.
        data["auth"]["keys"].append(
            {
                "name": "shared-budget",
                "key": BUDGET_KEY,
                "models": ["budget-priced"],
                "budget": {"limit_usd": 0.02, "period": "total"},
            }
        )
        path = tmp_path_factory.mktemp("shared-state") / "gateway.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        clients = []
        for _ in range(2):
            url = stack.enter_context(run_server(create_app(load_config(path))))
            clients.append(stack.enter_context(httpx.Client(base_url=url, timeout=30)))
        yield Replicas(*clients)


def chat(model: str, text: str | None = None) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text or f"shared {uuid.uuid4()}"}]}


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.feature("response-caching", step=3)
def test_an_answer_cached_by_one_replica_is_a_hit_on_the_other(replicas: Replicas) -> None:
    body = chat("mock-cached")
    first = replicas.a.post(URL, json=body, headers=auth())
    second = replicas.b.post(URL, json=body, headers=auth())
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-gateway-cache"] == "MISS"
    assert second.headers["x-gateway-cache"] == "HIT"
    assert second.json()["choices"] == first.json()["choices"]


@pytest.mark.feature("rate-limiting", step=(3, 7))
def test_a_request_limit_counts_requests_on_every_replica_together(replicas: Replicas) -> None:
    statuses = []
    for number in range(8):
        client = replicas.a if number % 2 == 0 else replicas.b
        reply = client.post(URL, json=chat("mock-limited"), headers=auth("sk-acceptance-rl-rpm"))
        statuses.append(reply.status_code)
        if reply.status_code == 429:
            break
    # rpm 3 for the key: three requests in all, whichever replica they reach (apart: three on each).
    assert statuses == [200, 200, 200, 429], statuses


@pytest.mark.feature("cost-tracking-budgets", step=3)
def test_a_budget_used_up_through_one_replica_is_used_up_on_the_other(replicas: Replicas) -> None:
    admitted = 0
    for _ in range(30):
        body = {**chat("budget-priced"), "max_tokens": 20}
        reply = replicas.a.post(URL, json=body, headers=auth(BUDGET_KEY))
        if reply.status_code != 200:
            break
        admitted += 1
    assert admitted > 0 and reply.status_code == 429, (admitted, reply.text)
    assert reply.json()["error"]["code"] == "budget_exceeded"
    other = replicas.b.post(URL, json={**chat("budget-priced"), "max_tokens": 20}, headers=auth(BUDGET_KEY))
    assert other.status_code == 429 and other.json()["error"]["code"] == "budget_exceeded"
    master = auth("sk-acceptance-master")
    reports = [
        {row["name"]: row for row in client.get("/admin/budgets", headers=master).json()["budgets"]}
        for client in (replicas.a, replicas.b)
    ]
    assert reports[0]["shared-budget"]["spent_usd"] == reports[1]["shared-budget"]["spent_usd"] != "0"


@pytest.mark.feature("load-balancing-failover", step=3)
def test_a_route_cooled_down_by_one_replica_is_skipped_by_the_other(replicas: Replicas) -> None:
    seen = []
    for _ in range(6):
        reply = replicas.a.post(URL, json=chat("lb-cooling"), headers=auth())
        seen.append(reply.status_code)
        if reply.status_code == 503:
            break
    assert seen[-1] == 503, f"the dead route never cooled down on replica a: {seen}"
    other = replicas.b.post(URL, json=chat("lb-cooling"), headers=auth())
    assert other.status_code == 503, other.text
    assert other.json()["error"]["code"] == "all_routes_cooling_down"
    assert other.headers["x-gateway-attempts"] == "0"  # b never tried the route: a's cooldown is shared
