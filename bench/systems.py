"""The systems under test: how each one is configured, started, made ready and addressed.

Every system sees the same upstream (nginx, or ``gateway mock-upstream``) and the same requests: model
``bench`` answers the fixed JSON completion and model ``bench-stream`` the 200-chunk SSE stream.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.nginx import MODEL, STREAM_MODEL
from bench.wrk import PROMPT, Load

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
KEY = "sk-bench-key-0001"
MASTER_KEY = "sk-bench-master-0001"
UPSTREAM_KEY = "sk-bench-upstream"
LITELLM_MASTER_KEY = "sk-" + "5f3a9c1e7b2d4086" * 4
# High enough never to trigger at any speed this machine reaches; the stages still do all their work.
HUGE_RPM = 1_000_000_000
HUGE_TPM = 1_000_000_000_000
HUGE_BUDGET_USD = 1_000_000_000
# The production cache shares the memory store's bound: small, so a 100,000-request soak with unique
# prompts reaches it early and the growth it reports is a leak, not the cache filling up.
STORE_MAX_BYTES = 8 * 1024 * 1024

GATEWAY_SYSTEMS = ("gateway-bare", "gateway-production", "gateway-production-redis", "gateway-cache-hit")
ALL_SYSTEMS = ("direct", "passthrough", *GATEWAY_SYSTEMS)
# What serves the passthrough and the gateway: uvicorn (as `gateway run` does) or Granian, to compare them.
SERVERS = ("uvicorn", "granian")
STACK_LINE = "server stack: "
STACK_PARTS = ("server", "loop", "http", "json")


@dataclass(frozen=True)
class Upstream:
    """Where the fast upstream answers: JSON completions under ``json_base``, SSE under ``sse_base``."""

    kind: str  # "nginx" or "mock-upstream"
    url: str
    json_base: str  # e.g. http://127.0.0.1:9000/v1
    sse_base: str  # e.g. http://127.0.0.1:9000/sse/v1 (nginx) or the same /v1 (mock-upstream)


@dataclass
class System:
    """One system under test: its command line, readiness URL and the two request shapes it gets."""

    name: str
    command: list[str]
    ready_url: str
    chat: Load
    stream: Load
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reports_overhead: bool = False
    # server, loop, http (parser), json: known here for nginx, Granian and LiteLLM; the passthrough and
    # `gateway run` print theirs (STACK_LINE) and the harness reads it from their output once started.
    stack: dict[str, str] = field(default_factory=dict)


def parse_stack(output: str) -> dict[str, str]:
    """The last ``server stack: server=uvicorn 0.30.1; loop=uvloop 0.21.0; ...`` line of ``output``."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith(STACK_LINE):
            found = dict(
                part.split("=", 1) for part in line[len(STACK_LINE) :].strip().split("; ") if "=" in part
            )
    return found


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def granian_stack(json: bool = True) -> dict[str, str]:
    """Granian as the bench starts it: its own Rust HTTP server (hyper), uvloop, the gateway's orjson."""
    return {
        "server": f"granian {_version('granian')}",
        "loop": f"uvloop {_version('uvloop')}",
        "http": "granian (Rust, hyper)",
        "json": f"orjson {_version('orjson')}" if json else "none",
    }


def _importable_here() -> dict[str, str]:
    """PYTHONPATH with this checkout first: Granian imports the app by name, from another directory."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def _granian(target: str, port: int, cpu: int | None) -> list[str]:
    exe = shutil.which("granian")
    if exe is None:
        raise RuntimeError("Granian is not installed: pip install granian")
    command = [exe, "--interface", "asgi", "--factory", target, "--host", "127.0.0.1", "--port", str(port)]
    command += [
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    return _pinned(command, cpu)


def chat_body(model: str, stream: bool = False) -> str:
    """A chat request with the ``PROMPT`` marker where the (possibly varying) prompt goes."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a benchmark."},
            {"role": "user", "content": PROMPT},
        ],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def nonce(name: str) -> str:
    """A prompt prefix unique to this run and system, so no run hits another run's cache entries."""
    return f"{name}-{secrets.token_hex(4)}"


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    if cpu is not None and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *command]
    return command


def gateway_config(kind: str, upstream: Upstream, port: int, workdir: Path) -> dict[str, Any]:
    """The gateway config for ``gateway-bare`` (no features) or ``gateway-production``."""
    models = [
        {"name": MODEL, "routes": [{"provider": "upstream", "model": MODEL}]},
        {"name": STREAM_MODEL, "routes": [{"provider": "upstream-sse", "model": MODEL}]},
    ]
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port},
        "auth": {"keys": [{"name": "bench", "key": KEY, "models": "*"}]},
        "providers": [
            {"name": "upstream", "type": "openai", "base_url": upstream.json_base, "api_key": UPSTREAM_KEY},
            {
                "name": "upstream-sse",
                "type": "openai",
                "base_url": upstream.sse_base,
                "api_key": UPSTREAM_KEY,
            },
        ],
        "models": models,
        # The usage ledger is always on in this gateway; both configs write it to the same kind of file.
        "usage": {"database": str(workdir / f"{kind}-usage.sqlite3")},
    }
    if kind == "gateway-production":
        for model in models:
            model["pricing"] = {"input_per_1m": 2.5, "output_per_1m": 10.0}
        config["auth"]["master_key"] = MASTER_KEY
        config["auth"]["keys"][0].update(
            {
                "team": "bench",
                "rpm": HUGE_RPM,
                "tpm": HUGE_TPM,
                "budget": {"limit_usd": HUGE_BUDGET_USD, "period": "monthly"},
            }
        )
        config["features"] = {"cache": {"enabled": True, "mode": "all"}, "rate_limit": {}}
        config["state"] = {"memory_max_bytes": STORE_MAX_BYTES}
    return config


def feature_notes() -> list[str]:
    """Which production features this gateway has; anything missing is said, not faked."""
    from gateway.config import FeaturesConfig, KeyConfig

    notes = []
    fields = FeaturesConfig.model_fields
    for name in ("cache", "rate_limit", "budgets"):
        if name not in fields:
            notes.append(f"features.{name} has not landed: gateway-production runs without it")
    if "budget" not in KeyConfig.model_fields:
        notes.append("auth.keys[].budget has not landed: gateway-production runs without budgets")
    return notes


def _adapt_to_schema(config: dict[str, Any]) -> dict[str, Any]:
    """Drop settings this checkout's gateway does not know yet (reported by :func:`feature_notes`)."""
    from gateway.config import FeaturesConfig, KeyConfig

    features = config.get("features", {})
    for name in list(features):
        if name not in FeaturesConfig.model_fields:
            del features[name]
    for key in config["auth"]["keys"]:
        for name in list(key):
            if name not in KeyConfig.model_fields:
                del key[name]
    return config


def build(
    name: str,
    upstream: Upstream,
    port: int,
    workdir: Path,
    cpu: int | None,
    direct_url: str | None = None,
    server: str = "uvicorn",
    redis_url: str | None = None,
) -> System:
    """The :class:`System` called ``name`` listening on ``port``; the passthrough and the gateway on
    ``server`` (uvicorn or granian); ``gateway-production-redis`` keeps its state at ``redis_url``."""
    url = f"http://127.0.0.1:{port}"
    chat = chat_body(MODEL)
    stream = chat_body(STREAM_MODEL, stream=True)
    sse_path = upstream.sse_base.removeprefix(upstream.url)
    json_path = upstream.json_base.removeprefix(upstream.url)
    if name == "direct":
        assert direct_url is not None
        return System(
            name,
            [],  # started by the harness (a second nginx, or the mock upstream itself)
            f"{direct_url}/ready" if upstream.kind == "nginx" else f"{direct_url}/health",
            Load(f"{direct_url}{json_path}/chat/completions", chat, nonce=nonce(name)),
            Load(f"{direct_url}{sse_path}/chat/completions", stream, nonce=nonce(name)),
            stack=direct_stack(upstream),
        )
    if name == "passthrough":
        command = [
            sys.executable,
            str(ROOT / "bench" / "passthrough.py"),
            "--upstream",
            upstream.url,
            "--port",
            str(port),
        ]
        env: dict[str, str] = {}
        stack: dict[str, str] = {}
        if server == "granian":
            command = _granian("bench.passthrough:app_from_env", port, cpu)
            env, stack = {"BENCH_UPSTREAM": upstream.url, **_importable_here()}, granian_stack(json=False)
        return System(
            name,
            _pinned(command, cpu) if server == "uvicorn" else command,
            f"{url}/ready",
            Load(f"{url}{json_path}/chat/completions", chat, key=KEY, nonce=nonce(name)),
            Load(f"{url}{sse_path}/chat/completions", stream, key=KEY, nonce=nonce(name)),
            env=env,
            stack=stack,
        )
    if name in GATEWAY_SYSTEMS:
        kind = "gateway-bare" if name == "gateway-bare" else "gateway-production"
        path = workdir / f"{name}.yaml"
        config = gateway_config(kind, upstream, port, workdir)
        if name == "gateway-production-redis":
            # The production config with its shared state (rate limits, budget, cache, route health) in
            # Redis, as several replicas run it: the round trips to Redis are in the figure.
            assert redis_url is not None
            config["state"] = {"redis_url": redis_url, "on_error": "fail_closed"}
        path.write_text(yaml.safe_dump(_adapt_to_schema(config)))
        gateway = shutil.which("gateway")
        base = [gateway] if gateway else [sys.executable, "-c", "from gateway.cli import main; main()"]
        command = [*base, "run", "--config", str(path), "--port", str(port), "--log-level", "warning"]
        env, stack = {}, {}
        if server == "granian":
            # The same app and config as `gateway run --workers N` builds (gateway.cli.app_factory).
            command = _granian("gateway.cli:app_factory", port, cpu)
            env, stack = {"GATEWAY_CONFIG": str(path), **_importable_here()}, granian_stack()
        # Production misses the cache on every request (a new prompt each time); cache-hit repeats one.
        vary = name in ("gateway-production", "gateway-production-redis")
        return System(
            name,
            _pinned(command, cpu) if server == "uvicorn" else command,
            f"{url}/ready",
            Load(f"{url}/v1/chat/completions", chat, key=KEY, vary=vary, nonce=nonce(name)),
            Load(f"{url}/v1/chat/completions", stream, key=KEY, vary=vary, nonce=nonce(name)),
            notes=feature_notes() if kind == "gateway-production" else [],
            reports_overhead=True,
            env=env,
            stack=stack,
        )
    if name == "litellm":
        return litellm(upstream, port, workdir, cpu)
    raise ValueError(f"unknown system {name!r} (known: {', '.join((*ALL_SYSTEMS, 'litellm'))})")


def direct_stack(upstream: Upstream) -> dict[str, str]:
    """The upstream measured alone: nginx serving files (the mock upstream prints its own stack)."""
    if upstream.kind != "nginx":
        return {}
    exe = shutil.which("nginx")
    text = subprocess.run([exe, "-v"], capture_output=True, text=True).stderr.strip() if exe else ""
    version = text.rpartition("/")[2] or "?"  # "nginx version: nginx/1.22.1"
    return {"server": f"nginx {version}", "loop": "epoll", "http": "nginx", "json": "none (static files)"}


def litellm_stack() -> dict[str, str]:
    """What LiteLLM's proxy runs on, read from its environment: uvicorn's ``auto`` picks uvloop and
    httptools when installed there (LiteLLM passes no loop or parser of its own)."""
    python = LITELLM_VENV / "bin" / "python"
    script = (
        "import importlib.metadata as m\n"
        "for p in ('uvicorn', 'uvloop', 'httptools', 'orjson'):\n"
        "    try: print(p, m.version(p))\n"
        "    except m.PackageNotFoundError: print(p, '-')\n"
    )
    try:
        out = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    has = {p: v for p, v in found.items() if v != "-"}
    return {
        "server": f"uvicorn {has.get('uvicorn', '?')}",
        "loop": f"uvloop {has['uvloop']}" if "uvloop" in has else "asyncio (stdlib)",
        "http": f"httptools {has['httptools']}" if "httptools" in has else "h11",
        "json": f"orjson {has['orjson']} installed" if "orjson" in has else "json (stdlib)",
    }


def litellm_binary() -> Path | None:
    """LiteLLM's CLI in its own virtual environment, if installed (see bench/README.md)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    return exe if exe.is_file() else None


def litellm(upstream: Upstream, port: int, workdir: Path, cpu: int | None) -> System:
    """LiteLLM's proxy, one worker, both models as OpenAI-compatible deployments on the same upstream."""
    exe = litellm_binary()
    if exe is None:
        raise RuntimeError(
            f"LiteLLM is not installed in {LITELLM_VENV}: python3 -m venv {LITELLM_VENV} && "
            f"{LITELLM_VENV}/bin/pip install 'litellm[proxy]'"
        )
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": upstream.json_base,
                    "api_key": UPSTREAM_KEY,
                },
            },
            {
                "model_name": STREAM_MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": upstream.sse_base,
                    "api_key": UPSTREAM_KEY,
                },
            },
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
        # LiteLLM refuses to start without a strong master key; clients authenticate with it, as with ours.
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [
        str(exe),
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    env = {
        # No network beyond loopback: use the bundled price map instead of fetching it.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    url = f"http://127.0.0.1:{port}"
    chat = chat_body(MODEL)
    stream = chat_body(STREAM_MODEL, stream=True)
    return System(
        "litellm",
        _pinned(command, cpu),
        f"{url}/health/readiness",
        Load(f"{url}/v1/chat/completions", chat, key=LITELLM_MASTER_KEY, nonce=nonce("litellm")),
        Load(f"{url}/v1/chat/completions", stream, key=LITELLM_MASTER_KEY, nonce=nonce("litellm")),
        env=env,
        notes=["LiteLLM proxy, one worker, master key, no database (its lightest setup)"],
        stack=litellm_stack(),
    )


def process_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a system: ours plus ``extra``, with no HTTP proxy for loopback."""
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("NO_PROXY", "127.0.0.1,localhost")
    return env
