"""The GraphiQL page (``features.graphql.graphiql``) with every asset served by the gateway: no CDN.

GraphiQL, React and ReactDOM are vendored in ``static/`` (versions, licenses and sha256 sums in
``static/VERSIONS.md`` and ``static/SHA256SUMS``), stored gzip-compressed because GraphiQL's UMD build is
3.5 MB unminified. They are sent compressed to every browser that accepts gzip (all do) and decompressed
for a client that does not. Their names carry their versions, so they are cached for a year; the page's
own small script and stylesheet are cached for an hour, and the page itself is revalidated every time.

The page has no inline script or style, so its Content-Security-Policy allows scripts and stylesheets from
this origin only (GraphiQL's fonts and icons are data: URIs in its stylesheet); the browser test
(tests/site/test_graphiql_browser.py) fails on any violation.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gateway.errors import GatewayError

# connect-src 'self' covers the same origin's ws:/wss: too (CSP Level 3), for subscriptions.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; font-src data:; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
VENDORED_CACHE = "public, max-age=31536000, immutable"
OWN_CACHE = "public, max-age=3600"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# Our own files, next to the vendored ones: small, so stored as they are.
OWN = ("graphiql-page.js", "graphiql-page.css")


@dataclass(frozen=True)
class Asset:
    """One file under ``/graphql/static/``: its bytes (gzip-compressed when ``compressed``)."""

    body: bytes
    content_type: str
    cache: str
    compressed: bool

    def response(self, request: Request) -> Response:
        """The file for ``request``: compressed when the client accepts gzip."""
        headers = {"cache-control": self.cache, "x-content-type-options": "nosniff"}
        if not self.compressed:
            return Response(self.body, media_type=self.content_type, headers=headers)
        headers["vary"] = "accept-encoding"
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            headers["content-encoding"] = "gzip"
            return Response(self.body, media_type=self.content_type, headers=headers)
        return Response(gzip.decompress(self.body), media_type=self.content_type, headers=headers)


def vendored_sums() -> dict[str, str]:
    """The vendored files' names and the sha256 of each uncompressed file, from ``static/SHA256SUMS``."""
    text = resources.files(__package__).joinpath("static/SHA256SUMS").read_text(encoding="utf-8")
    return {name: digest for digest, name in (line.split() for line in text.splitlines() if line.strip())}


def sha256_of(asset: Asset) -> str:
    """The sha256 of ``asset``'s uncompressed content."""
    return hashlib.sha256(gzip.decompress(asset.body) if asset.compressed else asset.body).hexdigest()


class GraphiQLAssets:
    """The page and its assets, read from the package once when the route is built."""

    def __init__(self, path: str) -> None:
        static = resources.files(__package__).joinpath("static")
        self.assets: dict[str, Asset] = {}
        for name in vendored_sums():
            body = static.joinpath(f"{name}.gz").read_bytes()
            self.assets[name] = Asset(body, _type(name), VENDORED_CACHE, compressed=True)
        for name in OWN:
            self.assets[name] = Asset(static.joinpath(name).read_bytes(), _type(name), OWN_CACHE, False)
        page = static.joinpath("graphiql.html").read_text(encoding="utf-8")
        self.page = page.replace("{static}", f"{path}/static")

    def page_response(self) -> HTMLResponse:
        """The GraphiQL page, under its Content-Security-Policy."""
        headers = {
            "content-security-policy": CSP,
            "cache-control": "no-cache",
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
        }
        return HTMLResponse(self.page, headers=headers)

    def endpoint(self) -> Any:
        """The ``GET {path}/static/{name}`` endpoint: the named asset, 404 for any other name."""

        async def asset(name: str, request: Request) -> Response:
            found = self.assets.get(name)
            if found is None:
                raise GatewayError(404, "No such GraphiQL asset.", "invalid_request_error", "not_found")
            return found.response(request)

        return asset


def _type(name: str) -> str:
    return next(kind for suffix, kind in TYPES.items() if name.endswith(suffix))
