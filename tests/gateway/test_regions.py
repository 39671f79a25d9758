"""Region identity and region-aware routing: config, tiers, residency, the header and usage records.

The router tests use scripted fake providers and an injected clock (tests/gateway/test_routing.py's helpers),
so failover across tiers is exercised without waiting.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest
from gateway_testing import KEY, auth, chat
from test_routing import Clock, FakeProvider, no_next, unreachable

from gateway.app import create_app
from gateway.config import ConfigError, ModelConfig, parse_config
from gateway.errors import GatewayError
from gateway.features.regions import apply_region_env, tiers
from gateway.features.routing import RoutingConfig, RoutingStage
from gateway.features.routing_strategies import RouteTarget
from gateway.pipeline import Call, KeyIdentity, Response
from gateway.stores import MemoryStore

pytestmark = pytest.mark.anyio
MASTER = "sk-test-master-regions"
EU_ONLY = "sk-test-eu-only-01"


def target(provider: str, region: str | None) -> RouteTarget:
    return RouteTarget(provider, f"{provider}-m", 1.0, region)


def test_tiers_put_the_own_region_first_then_the_preference_then_the_rest() -> None:
    routes = [target("us", "us-east"), target("ap", "ap-south"), target("x", None), target("eu", "eu-west")]
    routes.append(target("de", "eu-central"))
    grouped = tiers(routes, "eu-west", {"eu-west": ["eu-central", "us-east"]})
    assert [[r.provider for r in tier] for tier in grouped] == [["eu"], ["de"], ["us"], ["ap", "x"]]
    # Without a replica region there is a single tier: a single-region gateway routes as before.
    assert tiers(routes, None, {"eu-west": ["us-east"]}) == [routes]


def test_gateway_region_env_fills_server_region_only_when_the_file_leaves_it_unset() -> None:
    env = {"GATEWAY_REGION": "us-east"}
    assert apply_region_env({"server": {"port": 1}}, env) == {"server": {"port": 1, "region": "us-east"}}
    assert apply_region_env({}, env) == {"server": {"region": "us-east"}}
    assert apply_region_env({"server": {"region": "eu-west"}}, env) == {"server": {"region": "eu-west"}}
    assert apply_region_env({"server": {}}, {}) == {"server": {}}


REGIONS_CONFIG = """
server: {region: eu-west}
auth:
  keys:
    - {name: anyone, key: sk-test-anyone-01}
    - {name: eu-only, key: sk-test-eu-only-01, allowed_regions: [eu-west, eu-central]}
providers:
  - {name: eu, type: mock}
  - {name: de, type: mock}
  - {name: us, type: mock}
models:
  - name: chat
    routes:
      - {provider: eu, model: m, region: eu-west}
      - {provider: de, model: m, region: eu-central}
      - {provider: us, model: m, region: us-east}
features:
  routing:
    region_preference: {eu-west: [eu-central, us-east]}
usage: {database: ":memory:"}
"""


def test_a_config_with_regions_loads_and_keys_carry_their_restriction() -> None:
    config = parse_config(REGIONS_CONFIG)
    assert config.server.region == "eu-west"
    assert config.features.routing.region_preference == {"eu-west": ["eu-central", "us-east"]}
    assert config.auth.keys[1].allowed_regions == ["eu-west", "eu-central"]


def test_the_environment_gives_the_region_when_the_file_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_REGION", "us-east")
    assert parse_config(REGIONS_CONFIG.replace("server: {region: eu-west}", "")).server.region == "us-east"
    assert parse_config(REGIONS_CONFIG).server.region == "eu-west"


@pytest.mark.parametrize(
    ("old", "new", "where", "problem"),
    [
        ("allowed_regions: [eu-west, eu-central]", "allowed_regions: [eu-west, eu-north]",
         "auth.keys[1].allowed_regions[1]", "no route is in region 'eu-north'"),
        ("[eu-central, us-east]", "[eu-central, us-wset]",
         "features.routing.region_preference.eu-west[1]", "no route is in region 'us-wset'"),
        ("allowed_regions: [eu-west, eu-central]", "allowed_regions: []",
         "auth.keys[1].allowed_regions", "at least 1 item"),
        ("server: {region: eu-west}", "server: {region: 'eu west'}", "server.region", "pattern"),
        ("region: us-east}", "region: 'us east/1'}", "models[0].routes[2].region", "pattern"),
    ],
)  # fmt: skip
def test_region_mistakes_are_config_errors_naming_the_key(
    old: str, new: str, where: str, problem: str
) -> None:
    assert old in REGIONS_CONFIG
    with pytest.raises(ConfigError) as caught:
        parse_config(REGIONS_CONFIG.replace(old, new), "gw.yaml")
    line = next(line for line in str(caught.value).splitlines() if where in line)
    assert problem in line, str(caught.value)


def test_a_replica_may_run_in_a_region_without_routes_of_its_own() -> None:
    assert parse_config(REGIONS_CONFIG.replace("{region: eu-west}", "{region: ap-south}")).server.region


# --- the router ---

ROUTES = [("eu", "eu-west"), ("de", "eu-central"), ("us", "us-east")]


def regional_model() -> ModelConfig:
    return ModelConfig.model_validate(
        {"name": "chat", "routes": [{"provider": p, "model": f"{p}-m", "region": r} for p, r in ROUTES]}
    )


def router(providers: list[FakeProvider], clock: Clock, region: str | None, **settings: Any) -> RoutingStage:
    settings.setdefault("region_preference", {"eu-west": ["eu-central", "us-east"]})
    return RoutingStage(
        RoutingConfig.model_validate(settings),
        {p.name: p for p in providers},
        {"chat": regional_model()},
        MemoryStore(clock=clock),
        rng=random.Random(0),
        clock=clock,
        monotonic=clock,
        sleep=clock.sleep,
        region=region,
    )


def call_for(regions: frozenset[str] | None = None) -> Call:
    return Call(
        request_id="req-1",
        key=KeyIdentity(name="eu-only" if regions else "anyone", key_id="kid", allowed_regions=regions),
        endpoint="chat",
        model="chat",
        model_config=None,  # type: ignore[arg-type]  # the router reads its own model table
        body={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
        headers={},
    )


@pytest.mark.parametrize("strategy", ["weighted", "round_robin", "least_inflight", "latency"])
async def test_every_strategy_serves_from_the_replicas_region_while_it_is_healthy(strategy: str) -> None:
    clock = Clock()
    providers = [FakeProvider(name) for name, _ in ROUTES]
    stage = router(providers, clock, "eu-west", strategy=strategy)
    for _ in range(20):
        result = await stage.handle(call_for(), no_next)
        assert isinstance(result, Response) and result.body["answered_by"] == "eu"
    assert [p.calls for p in providers] == [20, 0, 0]


async def test_failover_follows_the_preference_order() -> None:
    clock = Clock()
    providers = [
        FakeProvider("eu", unreachable("eu")),
        FakeProvider("de", unreachable("de")),
        FakeProvider("us"),
    ]
    result = await router(providers, clock, "eu-west").handle(call_for(), no_next)
    assert isinstance(result, Response) and result.body["answered_by"] == "us"
    assert [p.calls for p in providers] == [1, 1, 1]


async def test_a_us_replica_prefers_its_own_region() -> None:
    clock = Clock()
    providers = [FakeProvider(name) for name, _ in ROUTES]
    result = await router(providers, clock, "us-east").handle(call_for(), no_next)
    assert isinstance(result, Response) and result.body["answered_by"] == "us"


async def test_a_restricted_key_never_fails_over_outside_its_regions() -> None:
    clock = Clock()
    providers = [
        FakeProvider("eu", unreachable("eu")),
        FakeProvider("de", unreachable("de")),
        FakeProvider("us"),
    ]
    stage = router(providers, clock, "eu-west", max_attempts=5)
    with pytest.raises(GatewayError) as caught:
        await stage.handle(call_for(frozenset({"eu-west", "eu-central"})), no_next)
    error = caught.value
    assert error.status == 503 and error.code == "no_route_in_allowed_regions"
    assert "allowed_regions: eu-central, eu-west" in error.message and "us-east" in error.message
    assert providers[2].calls == 0  # the healthy us-east route was never called
    # The same failure for an unrestricted key fails over to us-east.
    result = await stage.handle(call_for(), no_next)
    assert isinstance(result, Response) and result.body["answered_by"] == "us"


async def test_residency_holds_on_a_replica_in_another_region_and_through_fallbacks() -> None:
    clock = Clock()
    providers = [FakeProvider(name) for name, _ in ROUTES]
    stage = router(providers, clock, "us-east")
    stage.models = {
        "chat": regional_model(),
        "us-only": ModelConfig.model_validate(
            {"name": "us-only", "routes": [{"provider": "us", "model": "x", "region": "us-east"}]}
        ),
    }
    result = await stage.handle(call_for(frozenset({"eu-west", "eu-central"})), no_next)
    assert isinstance(result, Response) and result.body["answered_by"] == "eu"  # nearest allowed, not local
    stage.models["chat"] = stage.models["chat"].model_copy(update={"fallbacks": ["us-only"]})
    providers[0].script = providers[1].script = [unreachable()]
    with pytest.raises(GatewayError) as caught:
        await stage.handle(call_for(frozenset({"eu-west", "eu-central"})), no_next)
    assert caught.value.status == 503 and caught.value.code == "no_route_in_allowed_regions"
    assert providers[2].calls == 0  # the replica's own region, healthy, but outside the key's regions


# --- through the app ---


async def test_every_response_names_the_replica_region_and_usage_records_the_region() -> None:
    text = REGIONS_CONFIG.replace("{name: anyone, key: sk-test-anyone-01}", f"{{name: alice, key: {KEY}}}")
    text = text.replace("auth:\n", f"auth:\n  master_key: {MASTER}\n").replace(
        "features:", "  - {name: far, routes: [{provider: us, model: m, region: us-east}]}\nfeatures:"
    )
    app = create_app(parse_config(text))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            ok = await client.post("/v1/chat/completions", json=chat(model="far"), headers=auth())
            assert ok.status_code == 200 and ok.headers["x-gateway-region"] == "eu-west"
            assert ok.headers["x-gateway-route"] == "us/m"
            kept = await client.post("/v1/chat/completions", json=chat(model="far"), headers=auth(EU_ONLY))
            assert kept.status_code == 503 and kept.headers["x-gateway-region"] == "eu-west"
            assert kept.json()["error"]["code"] == "no_route_in_allowed_regions"
            refused = await client.post(
                "/v1/chat/completions", json=chat(model="far"), headers=auth("sk-nope")
            )
            assert refused.status_code == 401 and refused.headers["x-gateway-region"] == "eu-west"
            report = await client.get("/admin/usage", params={"group_by": "region"}, headers=auth(MASTER))
    assert report.status_code == 200, report.text
    by_region = {group["region"]: group["requests"] for group in report.json()["groups"]}
    # The answered request where its route ran; the one no upstream answered where the replica is.
    assert by_region == {"us-east": 1, "eu-west": 1}, by_region
