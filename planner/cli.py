"""The `planner` command line: thin commands that parse options, call the library and print."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from planner import edit, listing, problems, scaffold, starter
from planner.cli_track import step_lines
from planner.config import ConfigError, PlannerConfig, load_config
from planner.estimate import format_days, parse_estimate
from planner.fmt import format_text
from planner.graph import dependents
from planner.model import Design, Plan
from planner.parse import load_designs, quiet_front_matter, suggest, title_from_slug
from planner.rules import RULES, Validation, expand, plan_files, read_plan
from planner.rules import validate as validate_plans


def _version() -> str:
    try:
        return version("llm-gateway-planner")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


class _Group(click.Group):
    """The command group, with one last guard: a file-system failure (permissions, a full disk, a file
    where a folder should be) is a message naming the file, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `planner list | head`: click ends quietly on a closed pipe
                raise
            where = f": {problems.display_path(Path(os.fsdecode(exc.filename)))}" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Start a roadmap in DIRECTORY (default: the current folder).

    Creates planner.toml, plans/README.md, plans/_template.md, docs/index.md and mkdocs.yml, never
    overwriting a file that exists; an existing mkdocs.yml gets the planner plugin added to it.
    """
    try:
        written = starter.init_project(directory)
    except (starter.StarterError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    base = directory.resolve()
    for item in written:
        shown = item.path.relative_to(base).as_posix() if item.path.is_relative_to(base) else item.path
        note = f" ({item.note})" if item.note else ""
        click.echo(f"{item.outcome:<8} {shown}{note}")
    here = "" if base == Path.cwd().resolve() else f"cd {problems.display_path(base)} && "
    click.echo(f"next: {here}planner new HIGH-my-feature && planner serve")


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


@main.command()
@click.argument("name", metavar="PRIORITY-slug")
@click.option("--title", help="The plan's title (default: from the slug).")
@click.option("--complexity", help="Simple, Moderate or Complex (as configured).")
@click.option("--estimate", help="e.g. '3 days', '2 weeks', '3-5 days', '~1 month'.")
@click.option(
    "--depends",
    "depends",
    multiple=True,
    metavar="SLUG",
    help="A dependency's slug or title; repeat or comma-separate.",
)
def new(
    name: str, title: str | None, complexity: str | None, estimate: str | None, depends: tuple[str, ...]
) -> None:
    """Create plans/PRIORITY-slug.md from the template (plans/_template.md overrides it).

    Missing fields are asked for when run in a terminal, and defaulted otherwise.
    """
    config = get_config()
    try:
        priority, slug = scaffold.parse_name(name, config)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PRIORITY-slug") from exc
    clash = scaffold.existing(config, slug)
    if clash is not None:
        raise click.ClickException(
            f"{problems.display_path(clash)} already uses the slug {slug!r}; pick another"
        )
    interactive = _stdin_is_terminal()
    middle = config.complexities[len(config.complexities) // 2]
    if title is None:
        default_title = title_from_slug(slug)
        title = click.prompt("Title", default=default_title) if interactive else default_title
    if complexity is None:
        choice = click.Choice(config.complexities, case_sensitive=False)
        complexity = click.prompt("Complexity", type=choice, default=middle) if interactive else middle
    if estimate is None:
        estimate = (
            click.prompt("Estimate", default="1 week", value_proc=_estimate_proc(config))
            if interactive
            else "1 week"
        )
    if not depends and interactive:
        depends = (
            click.prompt(
                "Dependencies (slugs, comma-separated)",
                default="",
                show_default=False,
                value_proc=_depends_proc(config, slug),
            ),
        )
    try:
        title = scaffold.check_title(title)
        complexity, dependencies = scaffold.check_fields(config, complexity, estimate, depends, slug)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        text = scaffold.render(
            config,
            priority=priority,
            slug=slug,
            title=title.strip(),
            complexity=complexity,
            estimate=estimate.strip(),
            dependencies=dependencies,
        )
        path = scaffold.create(config, priority, slug, text)
    except scaffold.ScaffoldError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(problems.display_path(path))


def _estimate_proc(config: PlannerConfig) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            parse_estimate(value, config.units)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        return value

    return check


def _depends_proc(config: PlannerConfig, slug: str) -> Callable[[str], str]:
    """Checks the answer at the prompt, so a typo asks again instead of losing the answers before it."""

    def check(value: str) -> str:
        try:
            scaffold.check_dependencies(config, (value,), slug)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        return value

    return check


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@main.command(name="list")
@click.option("--status", "statuses", multiple=True, help="Only plans with this status (repeatable).")
@click.option("--priority", "priorities", multiple=True, help="Only plans with this priority (repeatable).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
def list_plans(statuses: tuple[str, ...], priorities: tuple[str, ...], fmt: str) -> None:
    """List the plans and the completed features (design pages), most important first."""
    config = get_config()
    wanted_status = _choices(statuses, config.all_statuses, "--status")
    wanted_priority = _choices(priorities, config.priorities, "--priority")
    result = run_validation(config, None)
    plans = [
        entry
        for entry in listing.sort_plans([*result.plans, *result.designs], config)
        if (not wanted_status or listing.status_of(entry, config) in wanted_status)
        and (not wanted_priority or entry.priority in wanted_priority)
    ]
    if fmt == "json":
        click.echo(json.dumps([listing.record(plan, config) for plan in plans], indent=2))
    elif fmt == "csv":
        click.echo(listing.to_csv(plans, config), nl=False)
    elif plans:
        lines = listing.align(listing.to_table(plans, config))
        colour = use_colour()
        click.echo(click.style(lines[0], bold=True) if colour else lines[0], color=colour)
        for line in lines[1:]:
            click.echo(line)
    else:
        click.echo("no plans match", err=True)
    if result.errors:
        click.echo(
            f"note: {len(result.errors)} error(s) in the plans; run `planner validate` for details", err=True
        )


def _choices(values: tuple[str, ...], allowed: tuple[str, ...], option: str) -> set[str]:
    chosen = set()
    for value in values:
        guess = suggest(value, allowed)
        if guess is None or guess.lower() != value.lower():
            hint = f"did you mean {guess!r}?" if guess else f"use one of: {', '.join(allowed)}"
            raise click.BadParameter(f"{value!r} is not allowed; {hint}", param_hint=option)
        chosen.add(guess)
    return chosen


@main.command()
@click.argument("slug")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def show(slug: str, fmt: str) -> None:
    """Show one plan or completed feature: its metadata, what depends on it, and its text."""
    config = get_config()
    try:
        path = edit.find_plan(config, slug)
    except edit.EditError as exc:
        design = next((d for d in load_designs(config) if d.slug == slug.removesuffix(".md")), None)
        if design is None:
            raise click.ClickException(str(exc)) from exc
        _show_design(config, design, fmt)
        return
    result = run_validation(config, [path])
    plan = next((p for p in result.plans if p.path.resolve() == path.resolve()), None)
    if plan is None:
        first = result.errors[0]
        raise click.ClickException(f"cannot read {problems.display_path(path)}: {first.message}")
    everyone = [*result.plans, *(p for p in _all_plans(config) if p.path.resolve() != path.resolve())]
    users = dependents(everyone, plan.slug)
    if fmt == "json":
        data = listing.record(plan, config)
        data.update(
            owner=plan.owner,
            updated=plan.updated,
            dependents=users,
            sections=[{"title": s.title, "line": s.line, "body": s.body} for s in plan.sections],
            problems=[
                {"code": p.code, "severity": p.severity, "line": p.line, "message": p.message}
                for p in result.problems
            ],
            extra={k: str(v) for k, v in plan.extra.items()},
            steps=[{"number": step.number, "text": step.text} for step in plan.steps],
        )
        click.echo(json.dumps(data, indent=2))
        return
    days = ""
    if plan.estimate:
        low, high = plan.estimate.low_days, plan.estimate.high_days
        days = f" ({format_days(low)}{'' if low == high else '-' + format_days(high)} working days)"
    rows = [
        ("status", plan.status),
        ("priority", plan.priority),
        ("complexity", plan.complexity),
        ("estimate", plan.estimate_text + days),
        ("dependencies", ", ".join(plan.dependencies) or "none"),
        ("dependents", ", ".join(users) or "none"),
        ("feature", plan.feature),
        *((("owner", plan.owner),) if plan.owner else ()),
        *((("updated", plan.updated),) if plan.updated else ()),
        *((str(key), str(value)) for key, value in plan.extra.items()),
        ("path", listing.relative(plan.path, config)),
    ]
    colour = use_colour()
    heading = f"{plan.title} ({plan.slug})"
    click.echo(click.style(heading, bold=True) if colour else heading, color=colour)
    if result.problems:
        rows.append(
            (
                "problems",
                f"{len(result.errors)} error(s), {len(result.warnings)} warning(s); "
                f"run `planner validate {listing.relative(plan.path, config)}`",
            )
        )
    width = max(len(key) for key, _ in rows) + 2
    for key, value in rows:
        click.echo(f"  {key + ':':<{width}}{value}")
    click.echo()
    for line in step_lines(config.root, plan.feature, plan.steps):
        click.echo(f"  {line}")
    click.echo()
    click.echo(plan.body.strip("\n"))


def _show_design(config: PlannerConfig, design: Design, fmt: str) -> None:
    """A completed feature: its design page's metadata and text, and the plans that build on it."""
    text = design.path.read_text(encoding="utf-8")
    front = _front_matter_values(text)
    users = dependents(_all_plans(config), design.slug)
    if fmt == "json":
        data = listing.record(design, config)
        data.update(dependents=users, completed=front.get("completed"), owner=front.get("owner"))
        click.echo(json.dumps(data, indent=2))
        return
    rows = [
        ("status", f"{config.completed_status} (design page)"),
        ("priority", listing.priority_of(design)),
        *((("completed", front["completed"]),) if front.get("completed") else ()),
        *((("owner", front["owner"]),) if front.get("owner") else ()),
        ("dependents", ", ".join(users) or "none"),
        ("feature", design.feature),
        ("path", listing.relative(design.path, config)),
    ]
    colour = use_colour()
    heading = f"{design.title} ({design.slug})"
    click.echo(click.style(heading, bold=True) if colour else heading, color=colour)
    width = max(len(key) for key, _ in rows) + 2
    for key, value in rows:
        click.echo(f"  {key + ':':<{width}}{value}")
    click.echo()
    click.echo(_strip_front_matter(text).strip("\n"))


def _front_matter_values(text: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in quiet_front_matter(text).items() if v is not None}


def _strip_front_matter(text: str) -> str:
    lines = text.split("\n")
    if lines and lines[0].rstrip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
        if end is not None:
            return "\n".join(lines[end + 1 :])
    return text


def _all_plans(config: PlannerConfig) -> list[Plan]:
    plans = []
    for path in plan_files(config.plans_path):
        plan, _ = read_plan(path, config)
        if plan is not None:
            plans.append(plan)
    return plans


@main.command()
@click.argument("slug")
@click.argument("new_status", metavar="STATUS")
@click.option("--force", is_flag=True, help="Allow skipping forward more than one step.")
@click.option(
    "--by", "superseded_by", metavar="SLUG", help="With Superseded: the plan or design replacing it."
)
def status(slug: str, new_status: str, force: bool, superseded_by: str | None) -> None:
    """Move a plan's status: forward one step, back any number of steps, or close it (Rejected, Withdrawn,
    Deferred, Superseded: see `closed_statuses` in [tool.planner]).

    Completed is reached only through `planner complete SLUG`, which checks the feature's acceptance tests.
    """
    config = get_config()
    try:
        path, old, new_value = edit.change_status(
            config, slug, new_status, force=force, superseded_by=superseded_by
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="STATUS") from exc
    except edit.EditError as exc:
        raise click.ClickException(str(exc)) from exc
    where = problems.display_path(path)
    click.echo(
        f"{where}: already {old}" if old == new_value else f"{where}: {old or '(none)'} -> {new_value}"
    )


@main.command()
@click.argument("slug")
@click.argument("level", metavar="PRIORITY")
def priority(slug: str, level: str) -> None:
    """Set a plan's priority and rename its file to match (git mv inside a git work tree)."""
    config = get_config()
    try:
        old, new_path = edit.change_priority(config, slug, level)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PRIORITY") from exc
    except edit.EditError as exc:
        raise click.ClickException(str(exc)) from exc
    if old == new_path:
        click.echo(f"{problems.display_path(new_path)}: priority unchanged")
    else:
        click.echo(f"{problems.display_path(old)} -> {problems.display_path(new_path)}")


@main.command(name="fmt")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--check", is_flag=True, help="Change nothing; exit 1 listing the files that would change.")
def fmt_command(paths: tuple[Path, ...], check: bool) -> None:
    """Rewrite legacy plans (`**Status:** ...` lines) into canonical front matter, losing no content."""
    config = get_config()
    files = expand(paths) if paths else plan_files(config.plans_path)
    changed, unreadable = [], []
    for path in files:
        try:
            text = edit.read_exact(path)
        except (OSError, UnicodeDecodeError) as exc:
            unreadable.append(f"{problems.display_path(path)}: cannot read ({exc})")
            continue
        new_text, found = format_text(path, text, config)
        fatal = next((p for p in found if p.code in ("PL003", "PL004", "PL005")), None)
        if fatal is not None:
            unreadable.append(f"{problems.display_path(path)}: {fatal.message}")
            continue
        if new_text == text:
            continue
        changed.append(path)
        if check:
            click.echo(f"would reformat {problems.display_path(path)}")
        else:
            edit.write_atomic(path, new_text)
            click.echo(f"reformatted {problems.display_path(path)}")
    for line in unreadable:
        click.echo(f"skipped {line}", err=True)
    verb = "would be reformatted" if check else "reformatted"
    click.echo(
        f"{len(changed)} file(s) {verb}, {len(files) - len(changed) - len(unreadable)} unchanged", err=True
    )
    if unreadable or (check and changed):
        sys.exit(1)


from planner.cli_track import complete as complete_command  # noqa: E402  (registered after `main` exists)
from planner.cli_track import track as track_command  # noqa: E402

main.add_command(track_command)
main.add_command(complete_command)

from planner.cli_site import build as build_command  # noqa: E402
from planner.cli_site import fetch_diagrams_command  # noqa: E402
from planner.cli_site import render as render_command  # noqa: E402
from planner.cli_site import serve as serve_command  # noqa: E402

main.add_command(render_command)
main.add_command(serve_command)
main.add_command(build_command)
main.add_command(fetch_diagrams_command)
