"""`planner validate`: every plan parsed once, then the rules that need more than one file.

Single-file rules (names, metadata, sections, estimates) live in `planner.parse`; this module adds the
cross-file ones: duplicate slugs, dependencies (existence, cycles, blocked work) and the lifecycle.
"""

from __future__ import annotations

import difflib
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from planner.config import SUPERSEDED, PlannerConfig
from planner.graph import find_cycles, format_cycle
from planner.model import Design, Plan
from planner.parse import load_designs, parse_plan, slug_from_name
from planner.problems import Problem, sort_key
from planner.rulebook import RULE_BY_CODE, RULES, Rule, problem

__all__ = ["RULES", "RULE_BY_CODE", "Rule", "Validation", "plan_files", "read_plan", "validate"]

IGNORED_FILES = frozenset({"README.md", "_template.md"})


@dataclass
class Validation:
    """The result of validating: the plans that could be read, the designs, and every problem found."""

    plans: list[Plan]
    designs: list[Design]
    problems: list[Problem]
    files: list[Path] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def failed(self, strict: bool = False) -> bool:
        """True when there are errors, or with `strict` any problem at all."""
        return bool(self.problems if strict else self.errors)


def plan_files(folder: Path) -> list[Path]:
    """The plan documents in `folder`: every `*.md` except README.md and _template.md, sorted by name."""
    if not folder.is_dir():
        return []
    # scandir knows each entry's type without another system call per file.
    with os.scandir(folder) as entries:
        names = sorted(
            entry.name
            for entry in entries
            if entry.name.endswith(".md") and entry.name not in IGNORED_FILES and entry.is_file()
        )
    return [folder / name for name in names]


def read_plan(path: Path, config: PlannerConfig) -> tuple[Plan | None, list[Problem]]:
    """Read and parse one file; an unreadable file is a problem, not an exception."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [
            problem(
                "PL002",
                path,
                None,
                None,
                f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                "save it as UTF-8",
            )
        ]
    except OSError as exc:
        return None, [
            problem("PL002", path, None, None, f"cannot read the file: {exc.strerror}", "check it exists")
        ]
    return parse_plan(path, text, config)


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders replaced by their plan files; README.md and _template.md are never plans.

    A file named twice (`plans plans/HIGH-x.md`) is listed once: twice, it would clash with itself.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        for file in plan_files(path) if path.is_dir() else [path]:
            key = file.resolve()
            if file.name not in IGNORED_FILES and key not in seen:
                seen.add(key)
                files.append(file)
    return files


def validate(config: PlannerConfig, paths: Sequence[Path] | None = None) -> Validation:
    """Check `paths` (default: every plan in `config.plans_path`) and collect every problem.

    Given explicit paths, the other plans in the plans folder are still read so that dependencies and
    duplicate slugs are judged against the whole roadmap, but only problems in `paths` are reported.
    """
    designs = load_designs(config)
    targets = expand(paths) if paths is not None else plan_files(config.plans_path)
    context: list[Path] = []
    if paths is not None:  # resolving every path costs system calls: only when there are two lists to match
        target_keys = {_key(p) for p in targets}
        context = [p for p in plan_files(config.plans_path) if _key(p) not in target_keys]
    problems: list[Problem] = []
    plans: list[Plan] = []
    others: list[Plan] = []
    unreadable: set[str] = set()
    for path in targets:
        plan, found = read_plan(path, config)
        problems.extend(found)
        if plan is not None:
            plans.append(plan)
        else:
            # Its own problems say why; plans depending on it should not also hear "unknown dependency".
            unreadable.add(slug_from_name(path, config)[0])
    for path in context:
        plan, _ = read_plan(path, config)
        if plan is not None:
            others.append(plan)
        else:
            unreadable.add(slug_from_name(path, config)[0])
    problems.extend(check_roadmap(plans, others, designs, config, unreadable=unreadable))
    if paths is None:
        # The project's template is checked with the folder: every plan `planner new` makes comes from it.
        from planner.plan_template import check_template  # it imports the parser, as this module does

        problems.extend(check_template(config))
    problems.sort(key=sort_key)
    return Validation(plans, designs, problems, targets)


def check_roadmap(
    plans: list[Plan],
    others: list[Plan],
    designs: list[Design],
    config: PlannerConfig,
    *,
    unreadable: Iterable[str] = (),
) -> list[Problem]:
    """The rules across files: `plans` are reported on, `others` are context only.

    `unreadable` holds the slugs of plan files whose metadata could not be read: they exist, so depending
    on them is not reported as an unknown dependency.
    """
    problems: list[Problem] = []
    everyone = [*plans, *others]
    by_slug: dict[str, list[Plan]] = defaultdict(list)
    for plan in everyone:
        by_slug[plan.slug].append(plan)
    design_by_slug = {design.slug: design for design in designs}
    statuses = config.lifecycle  # closing states (Rejected, ...) are never "completed" nor "in progress"
    completed = config.completed_status
    in_progress = config.in_progress_status
    known = by_slug.keys() | design_by_slug.keys() | set(unreadable)
    for plan in plans:
        at = plan.positions.get("dependencies", (1, 1))
        twins = [other for other in by_slug[plan.slug] if other is not plan]
        if twins:
            names = ", ".join(_rel(other.path, config) for other in twins)
            problems.append(
                problem(
                    "PL020",
                    plan.path,
                    1,
                    1,
                    f"slug {plan.slug!r} is also used by {names}",
                    "keep one plan per feature: merge them or rename one",
                )
            )
        if plan.slug in design_by_slug:
            design = _rel(design_by_slug[plan.slug].path, config)
            problems.append(
                problem(
                    "PL021",
                    plan.path,
                    1,
                    1,
                    f"slug {plan.slug!r} is a completed feature ({design})",
                    "pick a new slug for follow-up work, e.g. " + f"{plan.slug}-v2",
                )
            )
        seen: set[str] = set()
        for dep in plan.dependencies:
            if dep in seen:
                problems.append(
                    problem(
                        "PL064", plan.path, *at, f"dependency {dep!r} is listed twice", "remove the repeat"
                    )
                )
                continue
            seen.add(dep)
            if dep == plan.slug:
                problems.append(
                    problem(
                        "PL061",
                        plan.path,
                        *at,
                        "the plan depends on itself",
                        f"remove {dep!r} from its dependencies",
                    )
                )
            elif dep not in known:
                close = difflib.get_close_matches(dep, list(known), n=1, cutoff=0.6)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"use the slug of a plan in {config.plans_dir}/ or of a page in {config.design_dir}/"
                )
                problems.append(
                    problem(
                        "PL060",
                        plan.path,
                        *at,
                        f"dependency {dep!r} is neither a plan nor a completed design",
                        hint,
                    )
                )
        problems.extend(_check_successor(plan, known, config))
        if plan.status == completed:
            problems.append(
                problem(
                    "PL070",
                    plan.path,
                    *plan.positions.get("status", (1, 1)),
                    f"the plan is {completed} but still in {config.plans_dir}/",
                    f"run `planner complete {plan.slug}`: it checks the acceptance tests and moves "
                    f"the decisions to {config.design_dir}/{plan.slug}.md",
                )
            )
        elif plan.status == in_progress:
            waiting = [
                dep
                for dep in dict.fromkeys(plan.dependencies)
                if dep in by_slug
                and dep not in design_by_slug
                and dep != plan.slug
                and all(other.status != completed for other in by_slug[dep])
            ]
            if waiting:
                detail = ", ".join(f"{dep} ({by_slug[dep][0].status or 'no status'})" for dep in waiting)
                problems.append(
                    problem(
                        "PL063",
                        plan.path,
                        *plan.positions.get("status", (1, 1)),
                        f"{in_progress} while dependencies are not {completed}: {detail}",
                        "finish those first, or move this plan back with `planner status "
                        f"{plan.slug} {statuses[1] if len(statuses) > 2 else statuses[0]}`",
                    )
                )
    reported = {id(plan) for plan in plans}
    for cycle in find_cycles(everyone):
        if cycle[0] == cycle[-1] and len(cycle) == 2:
            continue  # a self-dependency, reported as PL061
        owner = next((p for slug in cycle[:-1] for p in by_slug[slug] if id(p) in reported), None)
        if owner is None:
            continue
        problems.append(
            problem(
                "PL062",
                owner.path,
                *owner.positions.get("dependencies", (1, 1)),
                f"dependency cycle: {format_cycle(_rotate(cycle, owner.slug))}",
                "remove one of these dependencies so the plans can be ordered",
            )
        )
    return problems


def _check_successor(plan: Plan, known: set[str], config: PlannerConfig) -> list[Problem]:
    """A Superseded plan links to the plan or design replacing it; the link must lead somewhere."""
    at = plan.positions.get("superseded_by", plan.positions.get("status", (1, 1)))
    successor = plan.superseded_by
    if plan.status == SUPERSEDED and SUPERSEDED in config.closed_statuses and not successor:
        return [
            problem(
                "PL071",
                plan.path,
                *plan.positions.get("status", (1, 1)),
                f"the plan is {SUPERSEDED} but does not say by what",
                "add `superseded_by: SLUG` naming the plan or completed design that replaces it",
            )
        ]
    if successor is None:
        return []
    found: list[Problem] = []
    if plan.status != SUPERSEDED:
        found.append(
            problem(
                "PL073",
                plan.path,
                *at,
                f"superseded_by is set but the status is {plan.status!r}",
                f"set `status: {SUPERSEDED}`, or remove superseded_by",
            )
        )
    if successor == plan.slug or successor not in known:
        close = difflib.get_close_matches(successor, sorted(known - {plan.slug}), n=1, cutoff=0.6)
        what = "the plan itself" if successor == plan.slug else "neither a plan nor a completed design"
        found.append(
            problem(
                "PL072",
                plan.path,
                *at,
                f"superseded_by {successor!r} is {what}",
                f"did you mean {close[0]!r}?"
                if close
                else f"name a plan in {config.plans_dir}/ or a page in {config.design_dir}/",
            )
        )
    return found


def _rotate(cycle: list[str], start: str) -> list[str]:
    ring = cycle[:-1]
    index = ring.index(start)
    ring = ring[index:] + ring[:index]
    return [*ring, start]


def _key(path: Path) -> Path:
    return path.resolve()


def _rel(path: Path, config: PlannerConfig) -> str:
    try:
        return path.resolve().relative_to(config.root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
