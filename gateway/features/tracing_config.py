"""``features.tracing``: OpenTelemetry settings, apart from the tracer so gateway.config imports no SDK.

The OpenTelemetry packages are the optional extra ``tracing``
(``pip install 'llm-gateway-planner[tracing]'``); a config that enables tracing without them is a config
error naming ``features.tracing.enabled`` (or ``features.tracing.protocol`` for the gRPC exporter).

The standard ``OTEL_*`` environment variables fill the keys the file leaves out (see :data:`ENVIRONMENT`):
a key written in the file wins over the variable, the variable wins over the default, and
``OTEL_SDK_DISABLED=true`` turns tracing off whatever the file says (it is the SDK's kill switch).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.features.tracing import Tracing

TRACING_PACKAGES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
GRPC_PACKAGE = "opentelemetry.exporter.otlp.proto.grpc"
INSTALL_HINT = "pip install 'llm-gateway-planner[tracing]'"
# Where a traced call keeps its runtime's Tracing (``call.scratch``): the router and providers look here.
SCRATCH_KEY = "tracing"
# The collector's default address per protocol (the OTLP specification's ports).
DEFAULT_ENDPOINTS = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}
# The OTEL_* variables read, each with the key it fills; a signal-specific (TRACES) variable comes first.
ENVIRONMENT = {
    "service_name": ("OTEL_SERVICE_NAME",),
    "exporter": ("OTEL_TRACES_EXPORTER",),
    "protocol": ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    "endpoint": ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    "headers": ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
    "sample_ratio": ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"),
}
# OTEL_TRACES_SAMPLER values: the ratio each keeps for traces the gateway starts (None: read the _ARG).
# The gateway always follows a caller's sampled flag, so the non-parent-based names act as parent-based.
_SAMPLERS: dict[str, float | None] = {
    "always_on": 1.0,
    "always_off": 0.0,
    "traceidratio": None,
    "parentbased_always_on": 1.0,
    "parentbased_always_off": 0.0,
    "parentbased_traceidratio": None,
}


class TracingConfig(BaseModel):
    """``features.tracing``: whether spans are made, where they go, and which share of traces is kept.

    ``exporter``: ``otlp`` (OTLP to ``endpoint`` over ``protocol``), ``console`` (one JSON span per line on
    stdout) or ``none`` (spans still made, so ``traceparent`` still propagates upstream, but not exported).
    ``protocol``: ``http/protobuf`` (``endpoint`` is the collector's base URL; ``/v1/traces`` is appended
    unless already there) or ``grpc`` (``endpoint`` is ``http://host:port``, plaintext, or ``https://``).
    ``headers`` are sent with every export (e.g. a backend's API key); ``sample_ratio`` is the share of
    new traces kept (a caller's sampled flag in ``traceparent`` is always followed). ``baggage_attributes``
    names the W3C ``baggage`` entries copied onto spans as attributes. ``capture_content`` records
    prompts and completions (redacted, each attribute cut to ``max_content_chars`` characters of text).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    exporter: Literal["otlp", "console", "none"] = "otlp"
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    endpoint: str = ""  # "" until validated: the protocol's default collector address
    service_name: str = Field(default="llm-gateway", min_length=1)
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    headers: dict[str, str] = Field(default_factory=dict)
    baggage_attributes: list[str] = Field(default_factory=list)
    capture_content: bool = False
    max_content_chars: int = Field(default=4096, ge=1, le=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, data: Any) -> Any:
        # Reads the process environment at config load, like ``${VAR}`` substitution: `gateway check`
        # reports a bad OTEL_* value by name, and a reload picks up the environment of that moment.
        return with_environment(data, os.environ) if isinstance(data, dict) else data

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL such as http://localhost:4318")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name)]
        if bad:
            raise ValueError(f"not a valid header name: {bad[0]!r}")
        # gRPC metadata keys must be lower case; HTTP header names are case-insensitive anyway.
        return {name.lower(): v for name, v in value.items()}

    @model_validator(mode="after")
    def _defaults_and_packages(self) -> TracingConfig:
        if not self.endpoint:
            self.endpoint = DEFAULT_ENDPOINTS[self.protocol]
        if self.enabled and any(importlib.util.find_spec(name) is None for name in _roots(TRACING_PACKAGES)):
            raise ValueError(f"tracing needs the OpenTelemetry packages: {INSTALL_HINT}")
        if (
            self.enabled
            and self.exporter == "otlp"
            and self.protocol == "grpc"
            and any(importlib.util.find_spec(name) is None for name in _roots((GRPC_PACKAGE,)))
        ):
            raise ValueError(f"protocol grpc needs the OTLP/gRPC exporter: {INSTALL_HINT}")
        return self

    def traces_url(self) -> str:
        """The OTLP/HTTP traces URL for ``endpoint``."""
        return self.endpoint if self.endpoint.endswith("/v1/traces") else self.endpoint + "/v1/traces"


def with_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``data`` (the file's ``features.tracing``) with the keys it leaves out taken from ``OTEL_*``.

    A bad variable is a ValueError naming it (reported under ``features.tracing``).
    """
    merged = dict(data)
    if _flag(environ, "OTEL_SDK_DISABLED"):
        merged["enabled"] = False
    for key, names in ENVIRONMENT.items():
        if key in merged or not any(environ.get(name, "").strip() for name in names):
            continue
        if key == "sample_ratio":
            merged[key] = _sample_ratio(environ)
        elif key == "headers":
            name = next(n for n in names if environ.get(n, "").strip())
            merged[key] = _headers(name, environ[name])
        else:
            name = next(n for n in names if environ.get(n, "").strip())
            value = environ[name].strip()
            if key == "exporter" and value not in ("otlp", "console", "none"):
                raise ValueError(f"{name}: the gateway exports otlp, console or none, not {value!r}")
            if key == "protocol" and value not in DEFAULT_ENDPOINTS:
                raise ValueError(f"{name}: must be http/protobuf or grpc, not {value!r}")
            if key == "endpoint" and urlsplit(value).scheme not in ("http", "https"):
                raise ValueError(f"{name}: must be an http:// or https:// URL")
            merged[key] = value
    return merged


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() == "true"


def _sample_ratio(environ: Mapping[str, str]) -> float:
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_traceidratio"
    if sampler not in _SAMPLERS:
        raise ValueError(f"OTEL_TRACES_SAMPLER: must be one of {', '.join(_SAMPLERS)}, not {sampler!r}")
    fixed = _SAMPLERS[sampler]
    if fixed is not None:
        return fixed
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = float(arg) if arg else 1.0
    except ValueError:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: must be a number from 0 to 1, not {arg!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: must be a number from 0 to 1, not {arg!r}")
    return ratio


def _headers(name: str, value: str) -> dict[str, str]:
    # W3C Correlation-Context style, as the OTLP exporter spec says: key=value pairs, comma separated,
    # values URL-encoded. The values are credentials: an error names the variable, never the value.
    headers: dict[str, str] = {}
    for i, item in enumerate(value.split(",")):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{name}: entry {i + 1} is not key=value")
        headers[unquote(key.strip())] = unquote(raw.strip())
    return headers


def _roots(packages: tuple[str, ...]) -> tuple[str, ...]:
    # find_spec("a.b") imports "a" first and raises when it is missing: look the parents up one by one.
    names: list[str] = []
    for name in packages:
        parts = name.split(".")
        names.extend(".".join(parts[: i + 1]) for i in range(len(parts)))
    return tuple(dict.fromkeys(names))


def build_tracing(gateway: GatewayConfig) -> Tracing | None:
    """The runtime's tracer for ``gateway.features.tracing``; None (and no SDK import) when tracing is off.

    Captured content is redacted of every credential the whole config holds (gateway/redact.py).
    """
    config = gateway.features.tracing
    if config is None or not config.enabled:
        return None
    from gateway.features.tracing import Tracing
    from gateway.redact import Redactor

    return Tracing(config, Redactor.from_config(gateway) if config.capture_content else None)
