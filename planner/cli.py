"""The `planner` command line: thin commands that parse options, call the library and print."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click

from planner.config import ConfigError, PlannerConfig, load_config


def _version() -> str:
    try:
        return version("llm-gateway-planner")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="planner")
def main() -> None:
    """Scaffold, validate, render and verify the feature proposals in plans/."""


def get_config() -> PlannerConfig:
    """The project's configuration; a bad `[tool.planner]` table is a usage error (exit 2)."""
    try:
        return load_config()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@main.command()
def validate() -> None:
    """Check every plan in plans/ and report every problem found."""
    config = get_config()
    click.echo(f"{config.plans_path}: validation not implemented yet")
