"""The upstream HTTP transport, chosen by measurement: httpx's API over aiohttp's connection handling.

``python bench/transport.py`` (mock-upstream in a subprocess, 32 concurrent POSTs from one event loop,
2-core machine shared with other work; the mock alone serves about 4,600 req/s under wrk):

    httpx default     500-550 req/s   p50 36-43 ms   p99 ~290 ms
    httpx + aiohttp  1080-2240 req/s  p50 13-27 ms   p99 43-71 ms

So the gateway keeps httpx's transport interface as its seam (``MockTransport``/``ASGITransport`` in tests,
per-origin TLS pools in ``gateway/tls.py``) and sends through ``httpx_aiohttp.AiohttpTransport``, 2-4x the
throughput of httpx's own pool. Sequential round trips to the mock upstream (median, same machine):
``AsyncClient`` over aiohttp 0.53 ms, the same transport called directly 0.38-0.42 ms, raw aiohttp 0.31 ms;
so providers call the transport directly and skip the ``AsyncClient`` layer (``providers/base.py``).
"""

from __future__ import annotations

import httpx
from httpx_aiohttp import AiohttpTransport

# Enough connections for a busy replica; aiohttp keeps idle ones for keepalive_expiry seconds.
UPSTREAM_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30)


def default_transport() -> httpx.AsyncBaseTransport:
    """The transport upstream requests use unless one is injected."""
    return AiohttpTransport(limits=UPSTREAM_LIMITS)
