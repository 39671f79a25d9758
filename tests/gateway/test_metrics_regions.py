"""The replica's region in metrics: `gateway_info{version, region}` and `gateway_route_info{model, route,
region}`, bounded by the config (one replica region, one series per configured route)."""

from __future__ import annotations

import httpx
import yaml
from test_usage_metrics import rendered, samples, value
from uvicorn_server import run_server

from gateway import __version__
from gateway.app import create_app
from gateway.config import parse_config
from gateway.metrics import GatewayMetrics

MASTER = "sk-test-master-metrics-regions"
CONFIG = {
    "server": {"region": "eu-west"},
    "auth": {"master_key": MASTER},
    "providers": [{"name": "eu", "type": "mock"}, {"name": "us", "type": "mock"}],
    "models": [
        {
            "name": "chat",
            "routes": [
                {"provider": "eu", "model": "m", "region": "eu-west"},
                {"provider": "us", "model": "m", "region": "us-east"},
            ],
        },
        {"name": "anywhere", "routes": [{"provider": "us", "model": "x"}]},
    ],
    "usage": {"database": ":memory:"},
}


def test_a_scrape_names_the_replicas_region_and_each_routes_region() -> None:
    with run_server(create_app(parse_config(yaml.safe_dump(CONFIG)))) as url:
        reply = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {MASTER}"})
    assert reply.status_code == 200
    parsed = samples(reply.text)
    assert value(parsed, "gateway_info", version=__version__, region="eu-west") == 1
    info = [labels for (name, labels), _ in parsed.items() if name == "gateway_info"]
    assert len(info) == 1  # one series per replica, whatever the traffic
    assert value(parsed, "gateway_route_info", model="chat", route="eu/m", region="eu-west") == 1
    assert value(parsed, "gateway_route_info", model="chat", route="us/m", region="us-east") == 1
    assert value(parsed, "gateway_route_info", model="anywhere", route="us/x", region="") == 1


def test_without_a_region_the_label_is_empty() -> None:
    metrics = GatewayMetrics()
    metrics.sample_regions("1.0", None, [])
    assert value(samples(rendered(metrics)), "gateway_info", version="1.0", region="") == 1


def test_series_a_reload_replaced_drop_to_zero() -> None:
    metrics = GatewayMetrics()
    metrics.sample_regions("1.0", "eu-west", [("chat", "eu/m", "eu-west"), ("chat", "us/m", "us-east")])
    metrics.sample_regions("1.0", "eu-central", [("chat", "eu/m", "eu-west")])
    parsed = samples(rendered(metrics))
    assert value(parsed, "gateway_info", version="1.0", region="eu-west") == 0
    assert value(parsed, "gateway_info", version="1.0", region="eu-central") == 1
    assert value(parsed, "gateway_route_info", model="chat", route="us/m", region="us-east") == 0
    assert value(parsed, "gateway_route_info", model="chat", route="eu/m", region="eu-west") == 1
