"""``gateway keys``: create, list, rotate and revoke runtime virtual keys from a shell.

Thin commands over :class:`gateway.admin.keys.KeyAdmin`, the same functions as ``/admin/v1``: they open the
admin store the config file names (the SQLite file beside the ledger, or Redis), so a running gateway
using that config honours a change within its sync interval. Every change is audited with the actor
``cli:<user>``. Answers are printed as JSON; the secret of ``create`` and ``rotate`` is shown once.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from gateway.admin.access import ALL, AdminPrincipal
from gateway.admin.directory import KeyDirectory
from gateway.admin.keys import KeyAdmin
from gateway.admin.schemas import KeyCreate, KeyRotate
from gateway.admin.store import open_admin_store
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.errors import GatewayError

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="GATEWAY_CONFIG",
    help="The gateway's YAML config file (default: $GATEWAY_CONFIG, else the embedded demo).",
)


def _run(config_path: Path | None, work: Callable[[KeyAdmin, AdminPrincipal], Awaitable[Any]]) -> None:
    try:
        config: GatewayConfig = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    actor = AdminPrincipal(id="cli", name=f"cli:{getpass.getuser()}", scopes=frozenset({ALL}))

    async def session() -> Any:
        store = open_admin_store(config)
        try:
            return await work(
                KeyAdmin(store, KeyDirectory(store, config.admin.sync_interval_s), lambda: config), actor
            )
        finally:
            await store.close()

    try:
        result = asyncio.run(session())
    except GatewayError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    click.echo(json.dumps(result, indent=2))


@click.group()
def keys() -> None:
    """Manage runtime virtual keys (the same keys as /admin/v1/keys)."""


@keys.command()
@config_option
@click.option("--name", required=True, help="The key's name (usage is recorded under it).")
@click.option(
    "--model", "models", multiple=True, help="A model alias the key may use (repeat; default: all)."
)
@click.option("--rpm", type=int, default=None, help="Requests per minute.")
@click.option("--tpm", type=int, default=None, help="Tokens per minute.")
@click.option("--team", default=None, help="The team the key belongs to.")
@click.option("--expires-at", default=None, help="ISO 8601 with a time zone, e.g. 2027-01-01T00:00:00Z.")
def create(
    config_path: Path | None,
    name: str,
    models: tuple[str, ...],
    rpm: int | None,
    tpm: int | None,
    team: str | None,
    expires_at: str | None,
) -> None:
    """Create a key; prints it with its secret (shown this once)."""
    fields: dict[str, Any] = {
        "name": name,
        "models": list(models) or "*",
        "rpm": rpm,
        "tpm": tpm,
        "team": team,
    }
    if expires_at is not None:
        fields["expires_at"] = expires_at
    try:
        spec = KeyCreate.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + "-".join(str(p) for p in first["loc"][:1]).replace("_", "-")
        click.echo(f"error: {option}: {first['msg']}", err=True)
        sys.exit(2)
    _run(config_path, lambda admin, actor: admin.create(spec, actor))


@keys.command("list")
@config_option
@click.option("--limit", type=click.IntRange(1, 100), default=100, show_default=True)
@click.option("--cursor", default=None, help="next_cursor of the previous page.")
def list_keys(config_path: Path | None, limit: int, cursor: str | None) -> None:
    """List keys (config-file keys first), never their secrets."""
    _run(config_path, lambda admin, actor: admin.page(cursor, limit))


@keys.command()
@config_option
@click.argument("key_id")
@click.option("--grace-period-s", type=click.IntRange(0, 30 * 86400), default=None,
              help="How long the old secret keeps working (default: admin.rotation_grace_s).")  # fmt: skip
def rotate(config_path: Path | None, key_id: str, grace_period_s: int | None) -> None:
    """Give a key a new secret (printed once); the old one works for the grace period."""
    _run(
        config_path,
        lambda admin, actor: admin.rotate(key_id, KeyRotate(grace_period_s=grace_period_s), actor),
    )


@keys.command()
@config_option
@click.argument("key_id")
def revoke(config_path: Path | None, key_id: str) -> None:
    """Revoke a key (running gateways refuse it within a second)."""
    _run(config_path, lambda admin, actor: admin.revoke(key_id, actor))
