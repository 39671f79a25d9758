"""The upstream HTTP transport, chosen by measurement.

Measured on this machine (2 cores), ``bench/transport.py`` against ``gateway mock-upstream``:
FIGURES_PENDING
"""

from __future__ import annotations

import httpx


def default_transport() -> httpx.AsyncBaseTransport:
    """The transport upstream requests use unless one is injected."""
    return httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))
