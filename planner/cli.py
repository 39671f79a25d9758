"""The `planner` command line: thin commands that parse options, call the library and print."""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from planner import problems
from planner.config import ConfigError, PlannerConfig, load_config
from planner.rules import RULES, Validation
from planner.rules import validate as validate_plans


def _version() -> str:
    try:
        return version("llm-gateway-planner")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="planner")
def main() -> None:
    """Scaffold, validate, render and verify the feature proposals in plans/."""


def use_colour() -> bool:
    """Colour only when stdout is a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return _stdout_is_terminal() and not os.environ.get("NO_COLOR")


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def get_config() -> PlannerConfig:
    """The project's configuration; a bad `[tool.planner]` table is a usage error (exit 2)."""
    try:
        return load_config()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="text for people, json for tools, github for Actions annotations.",
)
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
def validate(paths: tuple[Path, ...], fmt: str, strict: bool) -> None:
    """Check plans (default: every plan in plans/) and report every problem found.

    Exit status: 0 when there are no errors (no warnings either with --strict), 1 when there are,
    2 on usage errors.
    """
    config = get_config()
    result = run_validation(config, list(paths) if paths else None)
    if fmt == "json":
        click.echo(problems.to_json(result.problems, len(result.files)))
    elif fmt == "github":
        for found in result.problems:
            click.echo(problems.format_github(found))
    else:
        colour = use_colour()
        for found in result.problems:
            click.echo(_styled_problem(found, colour), color=colour)
        errors, warnings = len(result.errors), len(result.warnings)
        summary = f"{len(result.files)} file(s) checked: {errors} error(s), {warnings} warning(s)"
        style = "red" if errors else ("yellow" if warnings else "green")
        click.echo(click.style(summary, fg=style, bold=True) if colour else summary, color=colour)
    if result.failed(strict):
        sys.exit(1)


def run_validation(config: PlannerConfig, paths: list[Path] | None) -> Validation:
    """Validate, turning a plans folder that does not exist into a clear usage error."""
    if paths is None and not config.plans_path.is_dir():
        raise click.UsageError(
            f"no plans folder at {config.plans_path}; create one with `planner new HIGH-my-feature`"
            " or set plans_dir in [tool.planner]"
        )
    return validate_plans(config, paths)


def _styled_problem(found: problems.Problem, colour: bool) -> str:
    if not colour:
        return problems.format_text(found)
    severity = click.style(found.severity, fg="red" if found.is_error else "yellow", bold=True)
    code = click.style(found.code, fg="cyan")
    text = f"{click.style(found.location(), bold=True)}: {severity} {code} {found.message}"
    if found.hint:
        text += "\n    " + click.style(f"hint: {found.hint}", dim=True)
    return text


@main.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def rules(fmt: str) -> None:
    """List every validation rule with its code, severity and why it exists."""
    if fmt == "json":
        click.echo(
            json.dumps(
                [{"code": r.code, "name": r.name, "severity": r.severity, "why": r.why} for r in RULES],
                indent=2,
            )
        )
        return
    colour = use_colour()
    for rule in RULES:
        severity = f"{rule.severity:<7}"
        if colour:
            severity = click.style(severity, fg="red" if rule.severity == "error" else "yellow")
        click.echo(f"{rule.code}  {severity}  {rule.name:<22} {rule.why}", color=colour)
