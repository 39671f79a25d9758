"""``features.metrics``: whether the gateway counts, and how Prometheus may read ``/metrics``.

Apart from :mod:`gateway.metrics` so ``gateway.config`` imports no metrics client.

- ``enabled`` (default true): off, nothing is counted and ``/metrics`` is a 404 (the bench's baseline).
- ``token``: a bearer token of its own for the scraper, so Prometheus never holds the master key. Held as
  its digest only, like the keys (``sha256:<hex>`` is accepted as is), compared in constant time, and
  redacted from ``GET /admin/config``. The master key keeps working.
- ``listen``: ``host:port`` of a second, unauthenticated listener that serves only the metrics, for a
  private network (``127.0.0.1:9464``). Read at start; a reload does not move it.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.key_digests import presented_digest, stored_digest, stored_form


class MetricsConfig(BaseModel):
    """``features.metrics``: see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    token: str | None = Field(default=None, min_length=16)
    listen: str | None = None

    @field_validator("token")
    @classmethod
    def _digest_only(cls, value: str | None) -> str | None:
        return stored_form(value) if value is not None else None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be host:port such as 127.0.0.1:9464, got {value!r}")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if host != "localhost":
                raise ValueError(f"the host must be an IP address or localhost, got {host!r}") from None
        return value

    def token_matches(self, headers: Mapping[str, str]) -> bool:
        """Whether ``headers`` carry ``Authorization: Bearer <token>`` (constant-time comparison)."""
        if self.token is None:
            return False
        scheme, _, presented = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        return hmac.compare_digest(presented_digest(presented.strip()), stored_digest(self.token))
