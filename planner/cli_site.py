"""`planner render`, `planner serve`, `planner build` and `planner fetch-diagrams`: the roadmap site."""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path

import click

from planner.config import ConfigError, PlannerConfig, load_config
from planner.evidence import EVIDENCE_PATH
from planner.problems import format_text
from planner.render import Renderer, load_roadmap, write_pages
from planner.render.assets import AssetError, fetch_mermaid, mermaid_path
from planner.render.links import LinkStyle
from planner.render.roadmap import Roadmap


def _config() -> PlannerConfig:
    try:
        return load_config()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _report(roadmap: Roadmap) -> int:
    """Print every problem as `planner validate` does; returns the number of errors.

    Also says when the site will show nothing verified (no evidence yet, as in a fresh clone) or shows
    regressions, so the person starting the site hears it before opening a browser.
    """
    for problem in roadmap.problems:
        click.echo(format_text(problem), err=True)
    if roadmap.evidence_error:
        click.echo(f"warning: {roadmap.evidence_error}", err=True)
    elif roadmap.evidence is None:
        click.echo(
            f"note: no evidence in {EVIDENCE_PATH}: every feature shows 'not verified yet'; "
            "run `planner track` to run the acceptance tests and record it",
            err=True,
        )
    elif roadmap.regressions:
        click.echo(
            f"warning: regression in {', '.join(roadmap.regressions)} (`planner track` says why)", err=True
        )
    return len(roadmap.errors)


def _mkdocs_file(config: PlannerConfig) -> Path:
    path = config.root / "mkdocs.yml"
    if not path.is_file():
        raise click.UsageError(f"{path}: no mkdocs.yml; the site is configured there")
    return path


def _ensure_diagrams(config: PlannerConfig) -> None:
    """Fetch the pinned diagram library once; without it the site still builds, diagrams show as text."""
    if mermaid_path(config.root).is_file():
        return
    click.echo("fetching the diagram library once (mermaid, from the npm registry)...", err=True)
    try:
        fetch_mermaid(config.root)
    except AssetError as exc:
        click.echo(f"warning: diagrams will show as text: {exc}", err=True)


def _mkdocs(args: list[str], config: PlannerConfig) -> None:
    """Run mkdocs' own command line in this process (same logging, same exit codes, one process for
    Ctrl+C or a signal to stop); it exits with mkdocs' status."""
    from mkdocs.__main__ import cli as mkdocs_cli

    mkdocs_cli.main(args=[*args, "--config-file", str(_mkdocs_file(config))], prog_name="mkdocs")


@click.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the pages into (roadmap/ and design/ inside it).",
)
def render(out: Path) -> None:
    """Write the roadmap pages as Markdown files, for readers without mkdocs."""
    config = _config()
    roadmap = load_roadmap(config)
    if _report(roadmap):
        click.echo("not rendered: fix the errors above first", err=True)
        sys.exit(1)
    renderer = Renderer(LinkStyle.MARKDOWN)
    try:
        written = write_pages(roadmap, out, renderer.render(roadmap), renderer=renderer)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write the pages to {out}: {exc.strerror} ({exc.filename})"
        ) from exc
    click.echo(f"{len(written)} file(s) written to {out}")


@click.command()
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to serve on."
)
@click.option(
    "--dev-addr",
    metavar="HOST:PORT",
    default=None,
    help="Address to serve on, as mkdocs takes it (overrides --port; default 127.0.0.1:PORT).",
)
def serve(port: int, dev_addr: str | None) -> None:
    """Validate the plans, then serve the site on 127.0.0.1, rebuilding when a plan changes."""
    host, port = _address(dev_addr, port)
    config = _config()
    _mkdocs_file(config)
    _check_free(host, port)
    errors = _report(load_roadmap(config))
    if errors:
        click.echo(f"{errors} error(s): serving anyway; the overview page lists them", err=True)
    _ensure_diagrams(config)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving the roadmap on http://{shown}:{port}/ (Ctrl+C to stop)", err=True)
    _mkdocs(["serve", "--dev-addr", f"{shown}:{port}"], config)


def _address(dev_addr: str | None, port: int) -> tuple[str, int]:
    if dev_addr is None:
        return "127.0.0.1", port
    host, colon, number = dev_addr.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not number.isdigit() or not 1 <= int(number) <= 65535:
        raise click.BadParameter(
            f"{dev_addr!r} is not HOST:PORT, e.g. 127.0.0.1:8001", param_hint="--dev-addr"
        )
    return host, int(number)


def _check_free(host: str, port: int) -> None:
    """Fail before saying "serving" when the address is taken; mkdocs would only say so afterwards.

    Binds the way mkdocs' server does (SO_REUSEADDR: a port left in TIME_WAIT is free, a listening one is
    not). Exit status 1, as for every other failure to serve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise click.BadParameter(f"cannot resolve {host!r}: {exc.strerror}", param_hint="--dev-addr") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            what = "Address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise click.ClickException(
                f"{what}: cannot serve on {host}:{port}; stop what is using port {port}, or pick "
                f"another with --port {port + 1 if port < 65535 else 8000} or --dev-addr {host}:PORT"
            ) from exc


@click.command()
@click.option(
    "--site-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the site (default: mkdocs.yml's site_dir, site/).",
)
def build(site_dir: Path | None) -> None:
    """Validate the plans, then build the site with `mkdocs build --strict`."""
    config = _config()
    _mkdocs_file(config)
    if _report(load_roadmap(config)):
        click.echo("not built: fix the errors above first", err=True)
        sys.exit(1)
    _ensure_diagrams(config)
    args = ["build", "--strict"] + (["--site-dir", str(site_dir.resolve())] if site_dir else [])
    _mkdocs(args, config)


@click.command("fetch-diagrams")
def fetch_diagrams_command() -> None:
    """Fetch the pinned diagram library (mermaid) once from the npm registry, for offline diagrams."""
    config = _config()
    try:
        path = fetch_mermaid(config.root)
    except AssetError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"diagrams: {path.relative_to(config.root)} (checked against its pinned sha512)")
