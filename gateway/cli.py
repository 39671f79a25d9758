"""``gateway`` command line: ``gateway run``, ``gateway mock-upstream``, ``gateway check``, ``gateway keys``.

Thin commands: they parse options, call library functions and print; config problems are printed as a
list (file:line: key: problem) with exit code 2, never as a traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click
from fastapi import FastAPI

from gateway import __version__
from gateway.config import ConfigError, GatewayConfig, embedded_credentials, load_config
from gateway.keys_cli import keys

CONFIG_ENV = "GATEWAY_CONFIG"
# After the drain (gateway/shutdown.py) uvicorn's own shutdown has only idle connections left to close.
AFTER_DRAIN_S = 2.0


def _load(path: Path | None) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def app_factory() -> FastAPI:
    """The app for uvicorn's factory mode (used with ``--workers``): config path from $GATEWAY_CONFIG."""
    from gateway.app import create_app
    from gateway.server_stack import forwarded_allow_ips, freeze_startup_heap

    path = os.environ.get(CONFIG_ENV)
    config_path = Path(path) if path else None
    app = create_app(
        load_config(config_path), config_path=config_path, forwarded_allow_ips=forwarded_allow_ips()
    )
    freeze_startup_heap()
    return app


def demo_banner(config: GatewayConfig, url: str) -> str:
    """What ``gateway run`` prints with no config: the demo key and examples to paste."""
    # The loaded config holds keys as digests only: the demo's keys are read from the embedded file.
    key, master = embedded_credentials()
    models = ", ".join(m.name for m in config.models)
    return f"""No --config given: serving the embedded demo config (mock models, no upstream needed).

  models:     {models}
  demo key:   {key}
  master key: {master}   (admin API)

Try it:

  curl {url}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "mock-echo", "messages": [{{"role": "user", "content": "Hello, gateway!"}}]}}'

  python -c '
from openai import OpenAI
client = OpenAI(base_url="{url}/v1", api_key="{key}")
reply = client.chat.completions.create(model="mock-echo", messages=[{{"role": "user", "content": "Hello!"}}])
print(reply.choices[0].message.content)'
"""


@click.group()
@click.version_option(__version__, prog_name="gateway")
def main() -> None:
    """The reference OpenAI-compatible LLM gateway."""


def _check_ledger(config: GatewayConfig) -> None:
    """Open and close the usage ledger's sink once, so a database that cannot be reached (or a file that
    cannot be opened) is one clear line and exit 3, instead of a traceback from the server's start."""
    from gateway.usage_record import LedgerError
    from gateway.usage_sink import open_sink

    async def probe() -> None:
        sink = open_sink(config.usage)
        try:
            await sink.start()
        finally:
            await sink.close()

    try:
        asyncio.run(probe())
    except LedgerError as exc:  # its message names the sink, the password redacted
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)


@main.command()
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="YAML config file."
)
@click.option("--host", default=None, help="Bind address (default: server.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: server.port, 8080).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
def run(config_path: Path | None, host: str | None, port: int | None, workers: int, log_level: str) -> None:
    """Serve the gateway on uvicorn (with uvloop and httptools: gateway/server_stack.py)."""
    import uvicorn

    from gateway.app import create_app
    from gateway.logging import configure_logging
    from gateway.server_stack import fast_stack, forwarded_allow_ips, freeze_startup_heap
    from gateway.shutdown import DrainingServer
    from gateway.tls import uvicorn_ssl_options

    config = _load(config_path)
    _check_ledger(config)
    host = host or config.server.host
    port = port if port is not None else config.server.port
    url = f"{'https' if config.server.tls else 'http'}://{host}:{port}"
    if config_path is None:
        click.echo(demo_banner(config, url))
    click.echo(f"gateway {__version__} listening on {url} ({len(config.models)} models, {workers} worker(s))")
    configure_logging(log_level)
    stack = fast_stack()  # logs a line for each fast part it had to do without
    # bench/gateway.py reads this line to report which stack every figure was measured on.
    click.echo(f"server stack: {stack.describe()}")
    options = {"host": host, "port": port, "log_level": "warning", "access_log": False, "lifespan": "on"}
    # X-Forwarded-For/-Proto are applied by the app, to the routes that read them (create_app).
    options["proxy_headers"] = False
    options.update(stack.uvicorn_options())
    if options["http"] == "httptools":
        # The same parser, each response written to the socket once (gateway/server_protocol.py).
        from gateway.server_protocol import OneWriteHttpToolsProtocol

        options["http"] = OneWriteHttpToolsProtocol
    # With several workers uvicorn's supervisor handles SIGTERM: its graceful timeout is the drain deadline.
    options["timeout_graceful_shutdown"] = config.server.drain_timeout_s if workers > 1 else AFTER_DRAIN_S
    options.update(uvicorn_ssl_options(config.server.tls))  # HTTPS when server.tls is set
    if workers > 1:
        if not config.state.redis_url:
            # Each worker process would keep its own counters: N workers admit N times every rate limit.
            click.echo(
                f"warning: {workers} workers with in-process state: each keeps its own cache, rate limits and"
                " budget reservations; set state.redis_url to share them",
                err=True,
            )
        if config_path is not None:
            # Absolute, but symlinks kept: a mounted ConfigMap's file is a symlink re-pointed on each update.
            os.environ[CONFIG_ENV] = os.path.abspath(config_path)
        _run_workers(config, workers, options)
    else:
        # SIGHUP reloads the config file (with --workers, uvicorn restarts the workers on SIGHUP instead).
        app = create_app(
            config, config_path=config_path, sighup=True, forwarded_allow_ips=forwarded_allow_ips()
        )
        # SIGTERM drains first: /ready reports it, streams finish within server.drain_timeout_s.
        server = DrainingServer(uvicorn.Config(app, **options), app.state.gateway.drain)  # type: ignore[arg-type]
        freeze_startup_heap()
        server.run()
        if not server.started:
            sys.exit(3)  # as uvicorn.run: the server could not start (the port is taken...)


def _run_workers(config: GatewayConfig, workers: int, options: dict[str, object]) -> None:
    """uvicorn's supervisor with ``workers`` processes, their metrics in one private directory (every
    worker's counts in every scrape); the supervisor serves ``features.metrics.listen`` from it."""
    import uvicorn

    from gateway.metrics import multiprocess_registry, start_listener, worker_metrics_dir

    with worker_metrics_dir() as path:
        settings = config.features.metrics
        stop = None
        if settings.enabled and settings.listen is not None:
            stop = start_listener(settings.listen, multiprocess_registry(path))
        try:
            uvicorn.run("gateway.cli:app_factory", factory=True, workers=workers, **options)  # type: ignore[arg-type]
        finally:
            if stop is not None:
                stop()


@main.command()
@click.argument("config_path", type=click.Path(path_type=Path, dir_okay=False), required=False)
def check(config_path: Path | None) -> None:
    """Validate a config file and report every problem (exit 2 when invalid)."""
    config = _load(config_path)
    click.echo(
        f"{config_path or 'embedded default'}: ok ({len(config.providers)} providers, "
        f"{len(config.models)} models, {len(config.auth.keys)} keys)"
    )


@main.command("mock-upstream")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9000, show_default=True)
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--fail-status", type=click.IntRange(400, 599), default=503, show_default=True)
@click.option("--reply", default=None, help="Fixed answer (default: echo the last message).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--chunk-delay-ms", type=click.FloatRange(min=0), default=0.0, show_default=True)
def mock_upstream(
    host: str,
    port: int,
    latency_ms: float,
    fail_rate: float,
    fail_status: int,
    reply: str | None,
    chunk_size: int,
    chunk_delay_ms: float,
) -> None:
    """Serve a standalone mock speaking OpenAI, Anthropic and Cohere v2 by path (demos, tests, benchmarks)."""
    import uvicorn

    from gateway.mock_upstream import MockUpstream
    from gateway.providers.mock import MockOptions
    from gateway.server_stack import fast_stack

    options = MockOptions(
        reply=reply,
        latency_ms=latency_ms,
        fail_rate=fail_rate,
        fail_status=fail_status,
        chunk_size=chunk_size,
        chunk_delay_ms=chunk_delay_ms,
    )
    stack = fast_stack()
    click.echo(f"mock upstream on http://{host}:{port}/v1 (latency {latency_ms} ms, fail rate {fail_rate})")
    uvicorn.run(
        MockUpstream(options),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop=stack.loop,
        http=stack.http,
    )


main.add_command(keys)

if __name__ == "__main__":
    main()
