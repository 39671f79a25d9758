"""The bare-stack baseline: the least a proxy on the gateway's own server and HTTP client can do.

    python bench/passthrough.py --upstream http://127.0.0.1:9000 --port 8100

FastAPI on uvicorn (the same server options and stack ``gateway run`` uses: uvloop and httptools, see
``gateway/server_stack.py``; it prints the same ``server stack:`` line) forwarding every POST to the same
path on the upstream with one shared ``httpx.AsyncClient`` over the gateway's own transport
(``gateway.transport.default_transport``), so when the gateway changes its HTTP stack this baseline follows.
No auth, no parsing, no features: the gap between this and the gateway is what the gateway's code costs.
Streaming requests (``"stream": true`` in the body) are relayed as they arrive; everything else is read
whole and returned.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.server_stack import fast_stack
from gateway.transport import default_transport

_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}


def create_app(upstream: str) -> FastAPI:
    """A proxy app forwarding ``POST /<path>`` to ``upstream/<path>``."""
    client = httpx.AsyncClient(transport=default_transport(), timeout=httpx.Timeout(60.0, connect=5.0))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    async def forward(request: Request) -> Response:
        body = await request.body()
        headers = {"content-type": "application/json"}
        auth = request.headers.get("authorization")
        if auth:
            headers["authorization"] = auth
        upstream_request = client.build_request(
            "POST", upstream + request.url.path, content=body, headers=headers
        )
        # Only streams are relayed as they come (and a byte search is all the parsing this proxy does):
        # httpx over aiohttp answers sooner with stream=False, as the gateway sends JSON requests.
        stream = b'"stream":true' in body or b'"stream": true' in body
        response = await client.send(upstream_request, stream=stream)
        out_headers = {k: v for k, v in response.headers.items() if k not in _HOP_HEADERS}
        if not stream:
            return Response(response.content, response.status_code, out_headers)
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            headers=out_headers,
            background=BackgroundTask(response.aclose),
        )

    async def ready(request: Request) -> Response:
        return JSONResponse({"status": "ready"})

    # Plain routes, as the gateway's hot path uses (no FastAPI dependency solving).
    app.add_route("/ready", ready, methods=["GET"])
    app.add_route("/{path:path}", forward, methods=["POST"])
    return app


def app_from_env() -> FastAPI:
    """The app for an ASGI server's factory mode (Granian in bench/): the upstream from $BENCH_UPSTREAM."""
    return create_app(os.environ["BENCH_UPSTREAM"].rstrip("/"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Minimal FastAPI passthrough proxy (benchmark baseline).")
    parser.add_argument("--upstream", required=True, help="upstream base URL, e.g. http://127.0.0.1:9000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    import uvicorn

    stack = fast_stack()
    print(f"server stack: {stack.describe(json=None)}", flush=True)  # bytes in, bytes out: no JSON
    uvicorn.run(
        create_app(args.upstream.rstrip("/")),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop=stack.loop,
        http=stack.http,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
