"""`planner new`: check a `PRIORITY-slug` name and render a new plan from the template.

The template is `planner/templates/plan.md.j2`, or `plans/_template.md` when a project has one; both are
jinja2 templates given the variables listed in `planner.plan_template.VARIABLES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from planner import plan_template
from planner.config import PlannerConfig
from planner.edit import write_atomic
from planner.estimate import parse_estimate
from planner.parse import SLUG, load_designs, priority_prefixes, slug_from_name, slugify, suggest
from planner.problems import display_path
from planner.rules import plan_files, read_plan

TEMPLATE_NAME = plan_template.TEMPLATE_NAME


class ScaffoldError(Exception):
    """A plan that cannot be created; the message says why."""


def parse_name(name: str, config: PlannerConfig) -> tuple[str, str]:
    """(priority, slug) from `HIGH-response-caching` (a trailing `.md` is allowed).

    Raises ValueError naming what is wrong and showing a valid example.
    """
    prefixes = priority_prefixes(config)
    example = f"e.g. `planner new {next(iter(prefixes))}-response-caching`"
    if "/" in name or "\\" in name or ".." in name:
        raise ValueError(f"{name!r} is a path; give a name like PRIORITY-slug, {example}")
    stem = name.removesuffix(".md")
    prefix, dash, slug = stem.partition("-")
    if not dash or not slug:
        raise ValueError(f"{name!r} is not PRIORITY-slug; {example}")
    if prefix not in prefixes:
        if prefix.upper() in prefixes:
            raise ValueError(f"write the priority in capitals: {prefix.upper()}-{slug} ({example})")
        raise ValueError(f"unknown priority {prefix!r}; use one of {', '.join(prefixes)}, {example}")
    if not SLUG.match(slug):
        better = slugify(slug)
        guess = f"; did you mean {prefix}-{better}?" if better else ""
        raise ValueError(
            f"slug {slug!r} must be lowercase letters and digits joined by single dashes{guess} ({example})"
        )
    return prefixes[prefix], slug


def existing(config: PlannerConfig, slug: str) -> Path | None:
    """A plan (any priority) or completed design that already uses `slug`."""
    for path in plan_files(config.plans_path):
        if slug_from_name(path, config)[0] == slug:
            return path
    return next((design.path for design in load_designs(config) if design.slug == slug), None)


def check_title(title: str) -> str:
    """The title without surrounding spaces; ValueError when it is empty or spans lines (the H1 is one)."""
    title = title.strip()
    if not title:
        raise ValueError("the title is empty; give one with --title, e.g. --title 'Response Caching'")
    if "\n" in title or "\r" in title:
        raise ValueError(f"the title {title!r} spans several lines; a title is one line, the H1 of the plan")
    return title


def check_fields(
    config: PlannerConfig, complexity: str, estimate: str, dependencies: Sequence[str], slug: str
) -> tuple[str, list[str]]:
    """The complexity as configured and the dependency slugs; ValueError on a bad value."""
    if complexity not in config.complexities:
        guess = suggest(complexity, config.complexities)
        if guess is None or guess.lower() != complexity.lower():
            hint = f"did you mean {guess!r}?" if guess else f"use one of: {', '.join(config.complexities)}"
            raise ValueError(f"unknown complexity {complexity!r}; {hint}")
        complexity = guess
    parse_estimate(estimate, config.units)
    return complexity, check_dependencies(config, dependencies, slug)


def check_dependencies(config: PlannerConfig, dependencies: Sequence[str], slug: str) -> list[str]:
    """The slugs named in `dependencies`; ValueError naming an unknown one.

    Items are separated by commas; each is a slug, or a plan's or completed design's title (`Alpha One`,
    any case), or words whose slug is known (`alpha one` -> `alpha-one`). Space-separated slugs
    (`alpha beta`) are still read as several when each is a slug.
    """
    titles = _titles(config)
    known = set(titles.values())
    slugs: list[str] = []
    for item in dependencies:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            for dep in [slug] if part == slug else _resolve(part, known, titles):
                if dep == slug:
                    raise ValueError("a plan cannot depend on itself")
                if dep not in slugs:
                    slugs.append(dep)
    return slugs


def _resolve(item: str, known: set[str], titles: dict[str, str]) -> list[str]:
    if item in known:
        return [item]
    by_title = titles.get(item.casefold())
    if by_title is not None:
        return [by_title]
    if slugify(item) in known:
        return [slugify(item)]
    words = item.split()
    if len(words) > 1 and all(word in known for word in words):
        return words
    guess = suggest(slugify(item) or item, sorted(known))
    hint = f"did you mean {guess!r}?" if guess else "name a plan by its slug or title (`planner list`)"
    raise ValueError(f"unknown dependency {item!r}; {hint}")


def _titles(config: PlannerConfig) -> dict[str, str]:
    """casefolded title or slug -> slug, for every plan and completed design."""
    found: dict[str, str] = {}
    for path in plan_files(config.plans_path):
        plan, _ = read_plan(path, config)
        slug = plan.slug if plan is not None else slug_from_name(path, config)[0]
        found[slug.casefold()] = slug
        if plan is not None and plan.title:
            found.setdefault(plan.title.casefold(), slug)
    for design in load_designs(config):
        found[design.slug.casefold()] = design.slug
        if design.title:
            found.setdefault(design.title.casefold(), design.slug)
    return found


def render(
    config: PlannerConfig,
    *,
    priority: str,
    slug: str,
    title: str,
    complexity: str,
    estimate: str,
    dependencies: Sequence[str],
) -> str:
    """The new plan's text from the project's `_template.md` or the built-in template (see
    `planner.plan_template` for the variables it gets); ScaffoldError names the template's file and line."""
    values = {
        **plan_template.sample_values(config),
        "title": title,
        "slug": slug,
        "priority": priority,
        "complexity": complexity,
        "estimate": estimate,
        "dependencies": list(dependencies),
    }
    try:
        source, path = plan_template.load_source(config)
        return plan_template.render(config, values, source, path)
    except plan_template.TemplateError as exc:
        raise ScaffoldError(str(exc)) from exc


def create(config: PlannerConfig, priority: str, slug: str, text: str) -> Path:
    """Write the new plan, refusing to overwrite a plan with the same slug under any priority."""
    clash = existing(config, slug)
    if clash is not None:
        raise ScaffoldError(f"{clash} already uses the slug {slug!r}; pick another slug")
    path = config.plans_path / f"{priority.upper()}-{slug}.md"
    try:
        config.plans_path.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as exc:
        plans = config.plans_path
        not_a_folder = plans.exists() and not plans.is_dir()
        problem = f"{display_path(plans)} is not a folder" if not_a_folder else exc.strerror
        raise ScaffoldError(f"cannot write {display_path(path)}: {problem}") from exc
    return path
