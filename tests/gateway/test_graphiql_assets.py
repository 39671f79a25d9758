"""GraphiQL's vendored assets (gateway/graphql/static): each file is the one its sha256 sum names, the page
loads nothing from another site, the gateway serves them compressed with long cache headers under a strict
Content-Security-Policy, and the package data ships them."""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import parse_config
from gateway.graphql.ide import CSP, GraphiQLAssets, sha256_of, vendored_sums

STATIC = Path(__file__).parents[2] / "gateway" / "graphql" / "static"
ROOT = Path(__file__).parents[2]
CONFIG = """
auth: {master_key: sk-graphiql-assets-master}
providers: [{name: mock, type: mock}]
models: [{name: echo, routes: [{provider: mock}]}]
usage: {database: ":memory:"}
features: {graphql: {enabled: true, graphiql: %s}}
"""


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(parse_config(CONFIG % "true", "graphiql.yaml"))) as test_client:
        yield test_client


def test_every_vendored_file_is_the_published_one_its_sum_names() -> None:
    sums = vendored_sums()
    assert set(sums) == {p.name.removesuffix(".gz") for p in STATIC.glob("*.gz")}
    assert len(sums) == 4
    versions = (STATIC / "VERSIONS.md").read_text()
    for name, digest in sums.items():
        data = gzip.decompress((STATIC / f"{name}.gz").read_bytes())
        assert hashlib.sha256(data).hexdigest() == digest, name
        assert f"`{name}`" in versions  # each has its package, version and license noted
    assets = GraphiQLAssets("/graphql").assets
    assert {name: sha256_of(assets[name]) for name in sums} == sums
    for license_file in ("LICENSE-graphiql.txt", "LICENSE-react.txt"):
        assert "MIT License" in (STATIC / license_file).read_text()


def test_the_page_and_its_own_files_name_no_other_site() -> None:
    for name in ("graphiql.html", "graphiql-page.js", "graphiql-page.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), name
    page = GraphiQLAssets("/graphql").page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/graphql/static/") or s == "data:," for s in sources), sources
    served = set(GraphiQLAssets("/graphql").assets)
    assert {s.removeprefix("/graphql/static/") for s in sources if s != "data:,"} <= served


def test_the_page_is_served_under_a_strict_content_security_policy(client: TestClient) -> None:
    page = client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    csp = page.headers["content-security-policy"]
    assert csp == CSP
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert "http" not in csp and "unsafe" not in csp and "*" not in csp


def test_assets_are_served_compressed_with_long_cache_headers_and_without_a_key(client: TestClient) -> None:
    for name, digest in vendored_sums().items():
        compressed = client.get(f"/graphql/static/{name}", headers={"accept-encoding": "gzip"})
        assert compressed.status_code == 200
        assert compressed.headers["content-encoding"] == "gzip"
        assert compressed.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert compressed.headers["vary"] == "accept-encoding"
        assert hashlib.sha256(compressed.content).hexdigest() == digest  # httpx decoded it
        plain = client.get(f"/graphql/static/{name}", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert hashlib.sha256(plain.content).hexdigest() == digest
    script = client.get("/graphql/static/graphiql-page.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "public, max-age=3600"
    assert client.get("/graphql/static/graphiql-3.8.3.min.css").headers["content-type"].startswith("text/css")


def test_unknown_names_are_404_and_nothing_is_served_with_graphiql_off(client: TestClient) -> None:
    for name in ("nope.js", "SHA256SUMS", "VERSIONS.md", "graphiql.html", "..%2Fide.py"):
        missing = client.get(f"/graphql/static/{name}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found", name
    with TestClient(create_app(parse_config(CONFIG % "false", "graphiql.yaml"))) as off:
        assert off.get("/graphql/static/graphiql-page.js").status_code == 404


def test_the_package_data_ships_every_static_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["gateway"]
    for path in STATIC.iterdir():
        relative = path.relative_to(ROOT / "gateway").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
