"""The gateway's one YAML config file: schema, loading and validation.

``load_config(path)`` reads the file (or the embedded ``default.yaml`` when ``path`` is ``None``),
substitutes ``${ENV_VAR}`` references, validates everything with pydantic plus cross-reference
checks, and raises :class:`ConfigError` listing *every* problem at once, each naming the file,
line and key path, e.g.::

    gateway.yaml:14: models[2].routes[0].provider: unknown provider 'opnai', did you mean 'openai'?

Feature helpers add one field each to :class:`FeaturesConfig` (their own pydantic model, defined in
their feature module). Unknown keys are errors everywhere, with a did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.admin.config import AdminConfig
from gateway.console.config import ConsoleConfig
from gateway.cors import CorsConfig
from gateway.features.budgets import BudgetConfig, BudgetsConfig, TeamConfig, team_problems
from gateway.features.cache import CacheConfig
from gateway.features.partitions import partition_problems
from gateway.features.ratelimit import RateLimitConfig
from gateway.features.regions import REGION_PATTERN, apply_region_env, region_problems
from gateway.features.routing_config import RoutingConfig, fallback_problems
from gateway.features.tracing_config import TracingConfig
from gateway.graphql_config import GraphQLConfig
from gateway.key_digests import stored_form
from gateway.metrics_config import MetricsConfig
from gateway.reload_config import ReloadConfig
from gateway.responses_store import ResponsesConfig
from gateway.stores import StateConfig
from gateway.tls import ServerTLSConfig, UpstreamTLSConfig, origin_conflicts
from gateway.usage_config import UsageConfig
from gateway.ws_config import WebSocketConfig

# Key paths are rendered like "models[2].routes[0].provider".
PathPart = str | int


class ConfigError(Exception):
    """The config file is invalid; ``problems`` holds one line per problem, ``str()`` all of them."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        plural = "s" if len(problems) != 1 else ""
        super().__init__(f"{source}: {len(problems)} problem{plural}:\n" + "\n".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    """``server:`` where and how the gateway listens."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # On SIGTERM: how long requests and streams in flight get to finish (gateway/shutdown.py).
    drain_timeout_s: float = Field(default=30.0, gt=0)
    # HTTPS with this certificate and key (gateway/tls.py); None serves plain HTTP.
    tls: ServerTLSConfig | None = None
    # Browser clients from other origins (gateway/cors.py); None: no CORS headers, OPTIONS is a 405.
    cors: CorsConfig | None = None
    # The region this replica runs in (gateway/features/regions.py); GATEWAY_REGION sets it when unset here.
    # The router prefers routes in it; responses name it in x-gateway-region.
    region: str | None = Field(default=None, pattern=REGION_PATTERN)


class KeyConfig(_Strict):
    """One virtual key under ``auth.keys``. ``models`` is a list of aliases or ``"*"`` for all."""

    name: str = Field(min_length=1)
    # Held only as its digest once validated (gateway/key_digests.py): no plaintext key outlives loading.
    key: str = Field(min_length=8)
    models: list[str] | Literal["*"] = "*"
    team: str | None = None
    # Spending limit of this key (see gateway/features/budgets.py); its team's budget applies as well.
    budget: BudgetConfig | None = None
    # Rate limits of this key over all its models (features.rate_limit.default applies when all are unset).
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    max_concurrent: int | None = Field(default=None, gt=0)
    # Data residency: the only route regions this key's requests may reach, failover included (None: any).
    allowed_regions: list[str] | None = Field(default=None, min_length=1)

    @field_validator("key")
    @classmethod
    def _digest_only(cls, value: str) -> str:
        return stored_form(value)


class AuthConfig(_Strict):
    """``auth:`` the master key (admin routes) and the virtual keys clients use; both held as digests."""

    master_key: str | None = Field(default=None, min_length=8)
    keys: list[KeyConfig] = Field(default_factory=list)

    @field_validator("master_key")
    @classmethod
    def _digest_only(cls, value: str | None) -> str | None:
        return stored_form(value) if value is not None else None


class ProviderConfig(_Strict):
    """One upstream under ``providers:``; ``type`` picks the adapter, ``options`` are adapter-specific."""

    name: str = Field(min_length=1)
    type: str
    base_url: str | None = None
    api_key: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    # How the upstream's certificate is verified, and the client certificate presented (gateway/tls.py).
    tls: UpstreamTLSConfig | None = None
    # With features.tracing on: send traceparent/tracestate/baggage to this upstream (off for third
    # parties that should not see trace ids).
    propagate_trace: bool = True

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            # The value is not echoed: a misplaced ${API_KEY} would land in logs and terminals.
            raise ValueError("must be an http:// or https:// URL such as https://api.openai.com/v1")
        return value.rstrip("/") if value else value


class RouteConfig(_Strict):
    """One way to serve a model: which provider, under which upstream model name."""

    provider: str
    model: str | None = None  # None: the alias itself
    weight: float = Field(default=1.0, ge=0)
    # Where this deployment runs (e.g. eu-west): region-aware routing and auth.keys[].allowed_regions.
    region: str | None = Field(default=None, pattern=REGION_PATTERN)
    # USD per 1M tokens for this route; wins over the model's pricing and the bundled gateway/prices.yaml.
    pricing: PricingConfig | None = None
    # Parameters this route's provider cannot honour: dropped and reported (true) or refused (false);
    # None: the model's setting (gateway/params.py).
    drop_params: bool | None = None


class PricingConfig(_Strict):
    """Price in USD per 1M tokens."""

    input_per_1m: float = Field(default=0.0, ge=0)
    output_per_1m: float = Field(default=0.0, ge=0)
    # Prompt tokens read from / written to the provider's prompt cache; unset: the input price.
    cache_read_per_1m: float | None = Field(default=None, ge=0)
    cache_write_per_1m: float | None = Field(default=None, ge=0)


class ModelConfig(_Strict):
    """One model alias clients send, with its ordered routes."""

    name: str = Field(min_length=1)
    routes: list[RouteConfig] = Field(min_length=1)
    pricing: PricingConfig | None = None
    drop_params: bool | None = None  # for every route without its own; None: features.routing.drop_params
    # Aliases tried, in order, when every route of this one failed (gateway/features/routing.py).
    fallbacks: list[str] = Field(default_factory=list)


class FeaturesConfig(_Strict):
    """``features:`` one optional field per pipeline feature, added by the feature's helper."""

    cache: CacheConfig | None = None
    rate_limit: RateLimitConfig | None = None
    # Always on: budgets are set on keys and teams; this section only tunes how they are enforced.
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)
    # Always on: the router is the last stage; this section tunes balancing, retries and cooldowns.
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    # Hot reload (gateway/reload.py): watch the file, drain timeout for requests on the old config.
    reload: ReloadConfig = Field(default_factory=ReloadConfig)
    # OpenTelemetry spans per request, stage and upstream attempt (gateway/features/tracing.py); off if unset.
    tracing: TracingConfig | None = None
    # The WebSocket transport GET /v1/ws/chat (gateway/routes/ws.py): on by default, limits and Origin check.
    websocket: WebSocketConfig = Field(default_factory=WebSocketConfig)
    # The Responses API's stored responses (gateway/responses_store.py): always on, this tunes their TTL.
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    # Prometheus metrics (gateway/metrics.py): on by default; the scrape token and the separate listener.
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    # The admin console at /console (gateway/console/): off by default, mounted at start when on.
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    # The GraphQL API POST /graphql (gateway/routes/graphql.py): off by default, depth and cost limits.
    graphql: GraphQLConfig = Field(default_factory=GraphQLConfig)


class GatewayConfig(_Strict):
    """The whole config file."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    providers: list[ProviderConfig] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    teams: list[TeamConfig] = Field(default_factory=list)
    # Admin keys with scopes and the runtime key store (gateway/admin/).
    admin: AdminConfig = Field(default_factory=AdminConfig)

    def provider(self, name: str) -> ProviderConfig:
        """The provider called ``name`` (validated to exist for every route)."""
        return next(p for p in self.providers if p.name == name)

    def model(self, name: str) -> ModelConfig | None:
        """The model alias ``name``, or None."""
        return next((m for m in self.models if m.name == name), None)


DEFAULT_CONFIG_NAME = "default.yaml"
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: Path | None) -> GatewayConfig:
    """Load and validate a config file; ``None`` loads the embedded default (mock models, demo key).

    Raises :class:`ConfigError` listing every problem, each with file, line and key path.
    """
    if path is None:
        source = f"<embedded {DEFAULT_CONFIG_NAME}>"
        text = resources.files("gateway").joinpath(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, [f"{source}: cannot read the file: {exc.strerror or exc}"]) from None
    return parse_config(text, source)


def embedded_credentials() -> tuple[str, str | None]:
    """The demo key and master key of the embedded default, in plaintext (for ``gateway run``'s banner).

    A loaded config holds keys as digests only, so they are read from the embedded file itself.
    """
    text = resources.files("gateway").joinpath(DEFAULT_CONFIG_NAME).read_text(encoding="utf-8")
    auth = yaml.safe_load(text)["auth"]
    return auth["keys"][0]["key"], auth.get("master_key")


def _duplicate_keys(node: yaml.Node | None, source: str) -> Iterator[str]:
    """A message for every key written twice in one mapping, anywhere in the document."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                line = key.start_mark.line + 1
                if key.value in first:
                    yield (
                        f"{source}:{line}: duplicate key '{key.value}' (first written at line "
                        f"{first[key.value]}); YAML would silently keep only the last one"
                    )
                else:
                    first[key.value] = line
            yield from _duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item, source)


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    """Validate config YAML ``text``; ``source`` names it in error messages."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}: invalid YAML: {problem}"]) from None
    if data is None:
        # An empty or comment-only file is a mistake (a half-written copy, everything commented out), never
        # a wish for a gateway with no keys, models or master key: applied, it would lock every client out.
        raise ConfigError(
            source,
            [
                f"{source}: the file is empty or holds only comments; "
                "expected a mapping of keys (server, auth, providers, models...)"
            ],
        )
    if not isinstance(data, dict):
        raise ConfigError(
            source, ["the top level must be a mapping of keys (server, auth, providers, models...)"]
        )
    duplicates = list(_duplicate_keys(root, source))
    if duplicates:
        # YAML keeps the last of two equal keys and drops the first without a word: a second `features:`
        # block would silently turn off everything the first one set.
        raise ConfigError(source, duplicates)

    lines = _LineIndex(root)
    problems: list[tuple[tuple[PathPart, ...], str]] = []
    data = apply_region_env(_substitute_env(data, (), problems))
    problems.extend(_cross_reference_problems(data))
    config: GatewayConfig | None = None
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, data))
    problems.extend(_provider_option_problems(data))
    if config is not None:
        problems.extend(fallback_problems(config.models))
        problems.extend(team_problems(config.teams))
        problems.extend(
            region_problems(
                [route.region for model in config.models for route in model.routes],
                [(i, key.allowed_regions) for i, key in enumerate(config.auth.keys)],
                config.features.routing.region_preference,
            )
        )
        problems.extend((("providers", i, "base_url"), m) for i, m in origin_conflicts(config.providers))
        problems.extend(partition_problems(config))
    if problems:
        raise ConfigError(source, _render(source, problems, lines))
    assert config is not None
    return config


def _render(source: str, problems: list[tuple[tuple[PathPart, ...], str]], lines: _LineIndex) -> list[str]:
    # A value failing every member of a union gets one error per member: join them into one line.
    merged: dict[tuple[PathPart, ...], list[str]] = {}
    for path, message in problems:
        if message not in merged.setdefault(path, []):
            merged[path].append(message)
    out: list[tuple[int, str]] = []
    for path, messages in merged.items():
        message = ", or ".join(messages)
        line = lines.line_of(path)
        text = f"{source}:{line}: " if line else f"{source}: "
        text += f"{format_path(path)}: {message}" if path else message
        out.append((line or 0, text))
    return [text for _, text in sorted(out, key=lambda item: item[0])]


def format_path(path: tuple[PathPart, ...]) -> str:
    """``("models", 2, "routes", 0, "provider")`` -> ``models[2].routes[0].provider``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def did_you_mean(word: str, candidates: list[str]) -> str:
    """``", did you mean 'x'?"`` when a candidate is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f", did you mean '{close[0]}'?" if close else ""


def _substitute_env(value: Any, path: tuple[PathPart, ...], problems: list[Any]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; an unset variable is a problem."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            problems.append((path, f"environment variable {name} is not set (referenced as ${{{name}}})"))
            return ""

        return _ENV_RE.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, (*path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, (*path, i), problems) for i, v in enumerate(value)]
    return value


def _fields_of(model: type[BaseModel], data: Any, loc: tuple[PathPart, ...]) -> list[str]:
    """The field names allowed at ``loc`` (walking the schema), for did-you-mean on unknown keys."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``list[X]``, ``X | None``..., or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _pydantic_problems(exc: ValidationError, data: Any) -> Iterator[tuple[tuple[PathPart, ...], str]]:
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        if error["type"] == "extra_forbidden":
            key = str(loc[-1])
            allowed = _fields_of(GatewayConfig, data, loc[:-1])
            hint = did_you_mean(key, allowed) or (f" (allowed: {', '.join(allowed)})" if allowed else "")
            yield loc, f"unknown key '{key}'{hint}"
        elif error["type"] == "missing":
            yield loc, "required key is missing"
        else:
            message = error["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            # Users write YAML, not pydantic models: don't name our classes.
            message = _INSTANCE_OF.sub("a mapping of keys", message)
            yield loc, message


_INSTANCE_OF = re.compile(r"a valid dictionary or instance of \w+")

# Pydantic adds union-member tags to error locations (``models[0].routes`` -> ``list[...]``); drop them.
_UNION_TAGS = {"list[str]", "literal['*']", "dict[str,any]", "str", "function-after[_http_url(), str]"}


def _cross_reference_problems(data: dict[str, Any]) -> Iterator[tuple[tuple[PathPart, ...], str]]:
    """Checks across sections, done on the raw data so they are reported alongside schema errors."""
    from gateway.providers.registry import PROVIDER_TYPES

    providers = _list(data.get("providers"))
    provider_names: list[str] = []
    for i, provider in enumerate(providers):
        if not isinstance(provider, dict):
            continue
        name = provider.get("name")
        if isinstance(name, str):
            if name in provider_names:
                yield ("providers", i, "name"), f"duplicate provider name '{name}'"
            provider_names.append(name)
        kind = provider.get("type")
        if isinstance(kind, str) and kind not in PROVIDER_TYPES:
            yield (
                ("providers", i, "type"),
                f"unknown provider type '{kind}'{did_you_mean(kind, sorted(PROVIDER_TYPES))}"
                f" (known: {', '.join(sorted(PROVIDER_TYPES))})",
            )

    models = _list(data.get("models"))
    model_names: list[str] = []
    for i, model in enumerate(models):
        if not isinstance(model, dict):
            continue
        name = model.get("name")
        if isinstance(name, str):
            if name in model_names:
                yield ("models", i, "name"), f"duplicate model name '{name}'"
            model_names.append(name)
        routes = _list(model.get("routes"))
        for j, route in enumerate(routes):
            provider = route.get("provider") if isinstance(route, dict) else None
            if isinstance(provider, str) and provider not in provider_names:
                yield (
                    ("models", i, "routes", j, "provider"),
                    f"unknown provider '{provider}'{did_you_mean(provider, provider_names)}",
                )

    raw_auth = data.get("auth")
    auth: dict[str, Any] = raw_auth if isinstance(raw_auth, dict) else {}
    keys = _list(auth.get("keys"))
    key_names: list[str] = []
    key_values: list[str] = []
    for i, key in enumerate(keys):
        if not isinstance(key, dict):
            continue
        name, value = key.get("name"), key.get("key")
        if isinstance(name, str):
            if name in key_names:
                yield ("auth", "keys", i, "name"), f"duplicate key name '{name}'"
            key_names.append(name)
        if isinstance(value, str):
            if value in key_values or value == auth.get("master_key"):
                # Never echo the key itself: name the entry instead.
                yield ("auth", "keys", i, "key"), "this key value is already used by another key"
            key_values.append(value)
        allowed = key.get("models")
        if isinstance(allowed, list):
            for j, alias in enumerate(allowed):
                if isinstance(alias, str) and alias not in model_names:
                    yield (
                        ("auth", "keys", i, "models", j),
                        f"unknown model '{alias}'{did_you_mean(alias, model_names)}",
                    )

    # Per-model settings of features (cache, rate_limit) must name configured models.
    raw_features = data.get("features")
    features: dict[str, Any] = raw_features if isinstance(raw_features, dict) else {}
    for feature in ("cache", "rate_limit"):
        section = features.get(feature)
        per_model = section.get("models") if isinstance(section, dict) else None
        for alias in per_model if isinstance(per_model, dict) else ():
            if alias not in model_names:
                yield (
                    ("features", feature, "models", str(alias)),
                    f"unknown model '{alias}'{did_you_mean(str(alias), model_names)}",
                )
    cache = features.get("cache")
    groups = cache.get("shared") if isinstance(cache, dict) else None
    for group, names in groups.items() if isinstance(groups, dict) else ():
        for j, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in key_names:
                yield (
                    ("features", "cache", "shared", str(group), j),
                    f"unknown key '{name}'{did_you_mean(name, key_names)}",
                )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _provider_option_problems(data: dict[str, Any]) -> Iterator[tuple[tuple[PathPart, ...], str]]:
    """Each adapter validates its own ``options``; per provider, so other sections' errors don't hide them."""
    from gateway.providers.registry import PROVIDER_TYPES

    for i, raw in enumerate(_list(data.get("providers"))):
        try:
            provider = ProviderConfig.model_validate(raw)
        except ValidationError:
            continue  # already reported by the whole-file validation
        kind = PROVIDER_TYPES.get(provider.type)
        if kind is None:
            continue
        for sub, message in kind.config_problems(provider):
            yield ("providers", i, *sub), message


@dataclass
class _LineIndex:
    """Maps key paths to 1-based line numbers in the YAML source."""

    root: yaml.Node | None

    def line_of(self, path: tuple[PathPart, ...]) -> int | None:
        node = self.root
        best = node.start_mark.line + 1 if node is not None else None
        for part in path:
            if isinstance(node, yaml.MappingNode):
                child = None
                for key_node, value_node in node.value:
                    if key_node.value == part:
                        # Point at the key itself: it is where the user looks.
                        best = key_node.start_mark.line + 1
                        child = value_node
                        break
                if child is None:
                    return best
                node = child
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                best = node.start_mark.line + 1
            else:
                return best
        return best
