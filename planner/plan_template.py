"""The plan template: `plans/_template.md` (or the built-in one), its variables, and its own checks.

A template is jinja2 (`{{ title }}`, `{% for section in sections %}`), rendered with the variables in
`VARIABLES` and undefined names refused (StrictUndefined). `check_template` is what `planner validate` runs on
a project's `_template.md`: every problem names the file and line, whether it is a Python-format `{title}`
that would be written out literally, an unknown variable, a syntax error, or a rendering (with sample values)
that is not a valid plan.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from types import TracebackType
from typing import Any

from planner.config import PlannerConfig
from planner.fmt import dump_value
from planner.parse import parse_plan
from planner.problems import Problem, display_path
from planner.rulebook import problem
from planner.sections import UNFILLED

TEMPLATE_NAME = "_template.md"

# Every variable a template gets, with what it holds: the documentation (docs/planner/templates.md) lists
# the same names, and a test keeps the two in step.
VARIABLES: dict[str, str] = {
    "title": "the plan's title (`--title`, or words from the slug): `Response Caching`",
    "slug": "the slug from the file name: `response-caching`",
    "status": "the first status of the lifecycle: `Proposed`",
    "priority": "the priority from the file name's prefix: `High`",
    "complexity": "the complexity (`--complexity`): `Moderate`",
    "estimate": "the estimate as written (`--estimate`): `1 week`",
    "dependencies": "the dependency slugs, a list: `['rate-limiting']`",
    "sections": "the configured sections in order, each with `.title` and `.placeholder` (its prompt text)",
    "today": "the date today, ISO format: `2026-12-04` (for an `updated:` field)",
}
# Placeholder text of the built-in sections: `planner validate` reports a section still holding it.
PLACEHOLDERS = {
    "Goal": "[What are we trying to achieve?]",
    "User Benefit": "[Why is this valuable?]",
    "Design Proposal": "[How will this work?]",
    "Implementation Steps": "1. Step 1\n2. Step 2\n3. Step 3",
    "Open Questions": "- Question 1?\n- Question 2?",
    "Alternatives Considered": "[What other approaches were considered and why not chosen?]",
}
_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_FORMAT_FIELD = re.compile(r"(?<!\{)\{\s*([A-Za-z_][\w.]*)\s*\}(?!\})")


class TemplateError(Exception):
    """A template that cannot be used; `line` is the template's line (None when unknown)."""

    def __init__(self, where: str, line: int | None, message: str) -> None:
        super().__init__(f"{where}{f' line {line}' if line else ''}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Section:
    title: str
    placeholder: str


def template_path(config: PlannerConfig) -> Path:
    return config.plans_path / TEMPLATE_NAME


def load_source(config: PlannerConfig) -> tuple[str, Path | None]:
    """The project's `_template.md` and its path, else the built-in template and None."""
    override = template_path(config)
    if override.is_file():
        try:
            return override.read_text(encoding="utf-8"), override
        except UnicodeDecodeError as exc:
            where = display_path(override)
            raise TemplateError(where, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return files("planner").joinpath("templates/plan.md.j2").read_text(encoding="utf-8"), None


def sections(config: PlannerConfig) -> list[Section]:
    return [
        Section(title, PLACEHOLDERS.get(title, f"[Write the {title.lower()} here.]"))
        for title in config.sections
    ]


def source_problems(source: str) -> list[tuple[int, str]]:
    """(line, message) for what cannot work in a template: syntax errors, Python-format `{name}` fields
    (written out literally by jinja2) and variables the template is not given."""
    import jinja2
    from jinja2 import meta

    found: list[tuple[int, str]] = []
    # Jinja's own tags blanked out (newlines kept), so a `{name}` left over is text jinja2 would not touch.
    text = _JINJA_TAG.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), source)
    for number, line in enumerate(text.split("\n"), start=1):
        for match in _FORMAT_FIELD.finditer(line):
            name = match[1]
            found.append(
                (
                    number,
                    f"{match.group()} is a Python format field, written out literally: the template is "
                    f"jinja2, write {{{{ {name} }}}}",
                )
            )
    try:
        parsed = _environment(None).parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [*found, (exc.lineno, exc.message or str(exc))]
    for name in sorted(meta.find_undeclared_variables(parsed) - VARIABLES.keys()):
        close = difflib.get_close_matches(name, list(VARIABLES), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"the variables are: {', '.join(VARIABLES)}"
        found.append((_line_of(source, name), f"unknown variable {name!r}; {hint}"))
    return sorted(found)


def render(config: PlannerConfig, values: dict[str, Any], source: str, path: Path | None) -> str:
    """The template rendered with `values`; TemplateError naming the file and line on any problem."""
    import jinja2

    where = display_path(path) if path is not None else "the built-in template"
    problems = source_problems(source)
    if problems:
        first, message = problems[0]
        more = f" (and {len(problems) - 1} more: `planner validate` lists them)" if len(problems) > 1 else ""
        raise TemplateError(where, first, message + more)
    try:
        text = _environment(config.plans_path).from_string(source).render(**values)
    except jinja2.TemplateNotFound as exc:
        message = f"the included template {exc.name!r} is not in {config.plans_dir}/"
        raise TemplateError(where, _template_line(exc.__traceback__), message) from exc
    except jinja2.TemplateError as exc:
        line = exc.lineno if isinstance(exc, jinja2.TemplateSyntaxError) else None
        raise TemplateError(
            where, line or _template_line(exc.__traceback__), exc.message or str(exc)
        ) from exc
    except (TypeError, ValueError, AttributeError) as exc:  # e.g. `{{ title + 1 }}`
        raise TemplateError(where, _template_line(exc.__traceback__), str(exc)) from exc
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def sample_values(config: PlannerConfig, today: dt.date | None = None) -> dict[str, Any]:
    """Values like those `planner new` gives, for checking a template without writing a plan."""
    unit = next(iter(config.units), "week")
    return {
        "title": "Sample Plan",
        "slug": "sample-plan",
        "status": config.lifecycle[0],
        "priority": config.priorities[0],
        "complexity": config.complexities[len(config.complexities) // 2],
        "estimate": f"2 {unit}s",
        "dependencies": [],
        "sections": sections(config),
        "today": (today or dt.date.today()).isoformat(),
    }


def check_template(config: PlannerConfig) -> list[Problem]:
    """The problems of the project's `_template.md` (none when it has none): PL080 when it cannot render
    or renders into an invalid plan, PL081 for each section a scaffolded plan would have pre-filled (a
    plan made from it would pass validation without its author writing a word)."""
    path = template_path(config)
    if not path.is_file():
        return []
    try:
        source, _ = load_source(config)
    except TemplateError as exc:
        return [problem("PL080", path, None, None, exc.message, "save it as UTF-8")]
    found = source_problems(source)
    if found:
        return [problem("PL080", path, line, 1, message, _HINT) for line, message in found]
    values = sample_values(config)
    prefix = config.priorities[0].upper()
    try:
        text = render(config, values, source, path)
    except TemplateError as exc:
        return [problem("PL080", path, exc.line, 1, exc.message, _HINT)]
    plan, plan_problems = parse_plan(path.with_name(f"{prefix}-{values['slug']}.md"), text, config)
    rendered = text.split("\n")

    def at(line: int | None) -> str:
        return rendered[line - 1] if line and line <= len(rendered) else ""

    problems = [
        problem(
            "PL080",
            path,
            _source_line(
                source, rendered[found.line - 1] if found.line and found.line <= len(rendered) else ""
            ),
            1,
            f"rendered with sample values, it is not a valid plan: {found.message}",
            found.hint or _HINT,
        )
        for found in plan_problems
        if found.is_error or found.code not in UNFILLED | {"PL014"}
    ]
    if plan is None or problems:
        return problems
    unfilled = {p.line for p in plan_problems if p.code in UNFILLED and p.line is not None}
    for section in plan.sections:
        if section.title in config.sections and not _flagged(section.line, plan.sections, unfilled):
            problems.append(
                problem(
                    "PL081",
                    path,
                    _line_of(source, section.title),
                    1,
                    f"section {section.title!r} of a new plan would hold {_short(section.body)!r}, which "
                    "validation accepts as written: a plan could pass without its author filling it",
                    "use a [bracketed prompt], TODO, an HTML comment or nothing as its placeholder",
                )
            )
    return problems


_HINT = "see the template variables in the planner docs (Plan templates)"


def _flagged(line: int, all_sections: tuple[Any, ...], unfilled: set[int]) -> bool:
    """Whether a problem in `unfilled` lies in the section starting at `line`."""
    following = [s.line for s in all_sections if s.line > line]
    end = min(following) if following else 10**9
    return any(line <= at < end for at in unfilled)


def _short(text: str) -> str:
    one = " ".join(text.split())
    return one if len(one) <= 40 else one[:37] + "..."


def _source_line(source: str, rendered_line: str) -> int:
    """The template line that produced `rendered_line`: the same line, else the first line starting with
    its key (`estimate:`) or heading (`## Goal`)."""
    lines = source.split("\n")
    if rendered_line in lines:
        return lines.index(rendered_line) + 1
    key = re.match(r"^(#+ |[\w-]+\s*:)", rendered_line)
    if key:
        return next((n for n, line in enumerate(lines, start=1) if line.startswith(key[1])), 1)
    return 1


def _line_of(source: str, needle: str) -> int:
    for number, line in enumerate(source.split("\n"), start=1):
        if re.search(rf"\b{re.escape(needle)}\b", line):
            return number
    return 1


def _template_line(trace: TracebackType | None) -> int | None:
    """The template line of a rendering error: jinja2 rewrites tracebacks so that the template's frames
    carry its file name (`<template>` for a string) and its line numbers."""
    line = None
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == "<template>":
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


def _environment(folder: Path | None) -> Any:
    import jinja2  # only `planner new` and template checks need it: keep it out of other commands' start-up

    env = jinja2.Environment(
        # `{% include %}` in the project's template finds its files next to it, in plans/.
        loader=jinja2.FileSystemLoader(folder) if folder is not None else None,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=False,
    )
    env.filters["yaml"] = dump_value
    return env
