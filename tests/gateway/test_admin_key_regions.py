"""`allowed_regions` on keys made at run time (`/admin/v1/keys`): validated as the config file's keys are,
enforced the same way by the router, and shown by the REST API and GraphQL's `Key` type. Served by uvicorn
on loopback; the client API is called with the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXTransport
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import parse_config

MASTER = "sk-test-master-key-regions"
CONFIG = f"""
server: {{region: us-east}}
auth: {{master_key: {MASTER}}}
providers:
  - {{name: eu-up, type: mock}}
  - {{name: us-up, type: mock}}
  - {{name: eu-dead, type: mock, options: {{fail_rate: 1.0, fail_status: 503}}}}
models:
  - name: chat
    routes:
      - {{provider: eu-up, model: eu-model, region: eu-west}}
      - {{provider: us-up, model: us-model, region: us-east}}
  - name: eu-down
    routes:
      - {{provider: eu-dead, model: eu-model, region: eu-west}}
      - {{provider: us-up, model: us-model, region: us-east}}
features:
  routing: {{backoff_base_seconds: 0}}
  graphql: {{enabled: true}}
usage: {{database: ":memory:"}}
"""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with run_server(create_app(parse_config(CONFIG, "key-regions.yaml"))) as base:
        yield base


def create(url: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/admin/v1/keys", json={"name": "svc", **body}, headers=bearer(MASTER))


def route_of(url: str, secret: str, model: str = "chat") -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "where am I served?"}]
    )
    return raw.headers["x-gateway-route"]


def test_a_runtime_key_restricted_to_a_region_is_never_served_outside_it(url: str) -> None:
    created = create(url, name="eu-only", allowed_regions=["eu-west"])
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["allowed_regions"] == ["eu-west"]
    # The replica is in us-east and prefers its own route, but this key's requests stay in eu-west.
    assert {route_of(url, key["secret"]) for _ in range(5)} == {"eu-up/eu-model"}
    # With eu-west's upstream dead there is no failover to us-east: 503 naming the restriction.
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key["secret"], max_retries=0)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="eu-down", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 503
    assert "allowed_regions: eu-west" in failed.value.message
    # An unrestricted runtime key is served in the replica's region, as before.
    anywhere = create(url, name="anywhere").json()
    assert anywhere["allowed_regions"] is None
    assert route_of(url, anywhere["secret"]) == "us-up/us-model"


def test_updating_allowed_regions_applies_to_the_next_request_and_null_lifts_it(url: str) -> None:
    key = create(url, name="moving", allowed_regions=["eu-west"]).json()
    assert route_of(url, key["secret"]) == "eu-up/eu-model"
    path = f"{url}/admin/v1/keys/{key['id']}"
    moved = httpx.patch(path, json={"allowed_regions": ["us-east"]}, headers=bearer(MASTER))
    assert moved.status_code == 200 and moved.json()["allowed_regions"] == ["us-east"]
    assert route_of(url, key["secret"]) == "us-up/us-model"
    assert route_of(url, key["secret"], "eu-down") == "us-up/us-model"
    lifted = httpx.patch(path, json={"allowed_regions": None}, headers=bearer(MASTER))
    assert lifted.status_code == 200 and lifted.json()["allowed_regions"] is None
    assert httpx.get(path, headers=bearer(MASTER)).json()["allowed_regions"] is None


@pytest.mark.parametrize(
    ("regions", "param", "message"),
    [
        (["eu-west", "mars-1"], "allowed_regions[1]", "no route is in region 'mars-1' (regions on routes: "
         "eu-west, us-east)"),
        ([], "allowed_regions", "at least 1"),
        (["eu west"], "allowed_regions[0]", "pattern"),
    ],
)  # fmt: skip
def test_bad_allowed_regions_are_a_400_naming_the_field(
    url: str, regions: list[str], param: str, message: str
) -> None:
    for reply in (
        create(url, name="bad", allowed_regions=regions),
        httpx.patch(
            f"{url}/admin/v1/keys/{create(url, name='ok').json()['id']}",
            json={"allowed_regions": regions},
            headers=bearer(MASTER),
        ),
    ):
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["param"] == param and message in error["message"], error


def test_graphql_key_type_shows_allowed_regions(url: str) -> None:
    key = create(url, name="gql-eu", allowed_regions=["eu-west"]).json()
    transport = HTTPXTransport(url=f"{url}/graphql", headers=bearer(MASTER))
    query = "{ keys(first: 100) { nodes { id name allowedRegions } } }"
    with Client(transport=transport) as session:
        result = session.execute(GraphQLRequest(query))
    nodes = {node["id"]: node for node in result["keys"]["nodes"]}
    assert nodes[key["id"]] == {"id": key["id"], "name": "gql-eu", "allowedRegions": ["eu-west"]}
