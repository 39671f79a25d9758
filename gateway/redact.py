"""Secret redaction for error text that reaches clients.

Most error messages are written by the gateway and hold no secret, but some quote an upstream's own
error message (``Upstream error: ...``), and upstreams do echo credentials back: an OpenAI-compatible
server that rejects a key may answer ``Incorrect API key provided: sk-...``. So every error rendered to a
client goes through :meth:`Redactor.body`, which replaces each configured secret (master key, virtual
keys, upstream API keys and credential headers, the Redis password, TLS key passwords) with
``[redacted]``. It runs on error paths only, never on a successful response.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

REDACTED = "[redacted]"
# Shorter values (e.g. an organization header like "org-1") are too likely to be ordinary words.
MIN_SECRET_LENGTH = 6


def config_secrets(config: GatewayConfig) -> Iterator[str]:
    """Every credential ``config`` holds."""
    yield from (config.auth.master_key or "", *(key.key for key in config.auth.keys))
    for provider in config.providers:
        yield provider.api_key or ""
        headers = provider.options.get("headers")
        if isinstance(headers, dict):
            yield from (value for value in headers.values() if isinstance(value, str))
        if provider.tls is not None:
            yield provider.tls.client_key_password or ""
    if config.server.tls is not None:
        yield config.server.tls.key_password or ""
    if config.features.tracing is not None:
        yield from config.features.tracing.headers.values()  # e.g. a tracing backend's API key
    if config.state.redis_url:
        yield urlsplit(config.state.redis_url).password or ""


class Redactor:
    """Replaces known secrets in text; one compiled pattern, longest secret first."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = frozenset(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
        found = sorted(self.secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, found))) if found else None

    def extended(self, secrets: Iterable[str]) -> Redactor:
        """A redactor for these secrets and ``secrets`` (after a reload: old and new credentials)."""
        return Redactor([*self.secrets, *secrets])

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Redactor:
        """A redactor for every secret in ``config``."""
        return cls(config_secrets(config))

    def text(self, text: str) -> str:
        """``text`` with every secret replaced by ``[redacted]``."""
        return text if self._pattern is None else self._pattern.sub(REDACTED, text)

    def body(self, error: GatewayError) -> dict[str, Any]:
        """The OpenAI error envelope of ``error``, its message and param redacted."""
        body = error.body()
        inner = body["error"]
        for field in ("message", "param", "code"):
            if isinstance(inner[field], str):
                inner[field] = self.text(inner[field])
        return body
