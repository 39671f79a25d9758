"""`GET /admin/features` and the feature catalog behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway import __version__
from gateway.app import create_app
from gateway.catalog import CATALOG, Feature, always, configured, features_report
from gateway.config import GatewayConfig, parse_config

pytestmark = pytest.mark.anyio

KEY = "sk-features-user-0001"
MASTER_KEY = "sk-features-master-0002"
CONFIG = f"""
auth:
  master_key: {MASTER_KEY}
  keys: [{{name: user, key: {KEY}}}]
providers: [{{name: mock, type: mock}}]
models: [{{name: echo, routes: [{{provider: mock}}]}}]
usage: {{database: ":memory:"}}
"""


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def config() -> GatewayConfig:
    return parse_config(CONFIG, "features.yaml")


@pytest.fixture
async def client(config: GatewayConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
    ):
        yield client


async def test_reports_version_and_catalog_to_the_master_key(
    client: httpx.AsyncClient, config: GatewayConfig
) -> None:
    response = await client.get("/admin/features", headers=auth(MASTER_KEY))
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == __version__
    assert set(body["features"]) == {f.slug for f in CATALOG}
    assert body["features"] == features_report(config)


@pytest.mark.parametrize("headers", [{}, auth(KEY), auth("sk-not-a-key-at-all")])
async def test_needs_the_master_key(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.get("/admin/features", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert MASTER_KEY not in response.text


def test_catalog_slugs_are_unique_sorted_roadmap_slugs() -> None:
    slugs = [f.slug for f in CATALOG]
    assert slugs == sorted(set(slugs))
    assert all(s and s == s.lower() and " " not in s for s in slugs)


def test_report_judges_each_feature_against_the_config(config: GatewayConfig) -> None:
    catalog = (
        Feature("always-on", "Always on", always),
        Feature("missing", "Not configured", configured("no-such-section")),
    )
    assert features_report(config, catalog) == {
        "always-on": {"title": "Always on", "enabled": True},
        "missing": {"title": "Not configured", "enabled": False},
    }


def test_configured_means_set_and_not_switched_off() -> None:
    from types import SimpleNamespace

    def config_with(**features: object) -> GatewayConfig:
        return SimpleNamespace(features=SimpleNamespace(**features))  # type: ignore[return-value]

    cache = configured("cache")
    assert cache(config_with(cache=SimpleNamespace(ttl=60)))
    assert cache(config_with(cache=SimpleNamespace(enabled=True)))
    assert not cache(config_with(cache=SimpleNamespace(enabled=False)))
    assert not cache(config_with(cache=None))
    assert not cache(config_with())
