"""``features.tracing``: OpenTelemetry settings, apart from the tracer so gateway.config imports no SDK.

The OpenTelemetry packages are the optional extra ``tracing``
(``pip install 'llm-gateway-planner[tracing]'``); a config that enables tracing without them is a config
error naming ``features.tracing.enabled``.
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from gateway.features.tracing import Tracing

TRACING_PACKAGES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
INSTALL_HINT = "pip install 'llm-gateway-planner[tracing]'"
# Where a traced call keeps its runtime's Tracing (``call.scratch``): the router and providers look here.
SCRATCH_KEY = "tracing"


class TracingConfig(BaseModel):
    """``features.tracing``: whether spans are made, where they go, and which share of traces is kept.

    ``exporter``: ``otlp`` (OTLP/HTTP protobuf to ``endpoint``), ``console`` (one JSON span per line on
    stdout) or ``none`` (spans still made, so ``traceparent`` still propagates upstream, but not exported).
    ``endpoint`` is the collector's base URL (``/v1/traces`` is appended unless already there);
    ``headers`` are sent with every export (e.g. a backend's API key); ``sample_ratio`` is the share of
    new traces kept (a caller's sampled flag in ``traceparent`` is always followed).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    exporter: Literal["otlp", "console", "none"] = "otlp"
    endpoint: str = "http://localhost:4318"
    service_name: str = Field(default="llm-gateway", min_length=1)
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL such as http://localhost:4318")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _packages_installed(self) -> TracingConfig:
        if self.enabled and any(importlib.util.find_spec(name) is None for name in _roots()):
            raise ValueError(f"tracing needs the OpenTelemetry packages: {INSTALL_HINT}")
        return self

    def traces_url(self) -> str:
        """The OTLP/HTTP traces URL for ``endpoint``."""
        return self.endpoint if self.endpoint.endswith("/v1/traces") else self.endpoint + "/v1/traces"


def _roots() -> tuple[str, ...]:
    # find_spec("a.b") imports "a" first and raises when it is missing: look the parents up one by one.
    names: list[str] = []
    for name in TRACING_PACKAGES:
        parts = name.split(".")
        names.extend(".".join(parts[: i + 1]) for i in range(len(parts)))
    return tuple(dict.fromkeys(names))


def build_tracing(config: TracingConfig | None) -> Tracing | None:
    """The runtime's tracer for ``config``; None (and no SDK import) when tracing is off."""
    if config is None or not config.enabled:
        return None
    from gateway.features.tracing import Tracing

    return Tracing(config)
