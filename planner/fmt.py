"""`planner fmt`: rewrite legacy plans (`**Status:** ...` lines) into the canonical front-matter form.

Every metadata value moves into front matter, unknown bold lines included (as extra keys); the body is kept
line for line. Canonical files are left exactly as they are, so formatting twice changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from planner.config import PlannerConfig
from planner.model import Plan
from planner.parse import PLACEHOLDERS, parse_plan, split_lines
from planner.problems import Problem

CANONICAL_ORDER = ("title", "status", "priority", "complexity", "estimate", "dependencies")
OPTIONAL_ORDER = ("feature", "owner", "updated")


def format_text(path: Path, text: str, config: PlannerConfig) -> tuple[str, list[Problem]]:
    """The canonical text for one plan (unchanged when it is canonical already) and the parse problems.

    A plan whose metadata cannot be read is returned unchanged: its problems say what to fix first.
    """
    plan, problems = parse_plan(path, text, config)
    if plan is None or not plan.legacy:
        return text, problems
    return _like(text, canonical(plan, _written_dependencies(plan, text))), problems


def _like(original: str, new_text: str) -> str:
    """`new_text` with the original's byte order mark and line endings, so a Windows file stays one."""
    first_line_end = original.find("\n")
    if first_line_end > 0 and original[first_line_end - 1] == "\r":
        new_text = new_text.replace("\r\n", "\n").replace("\n", "\r\n")
    if original.startswith("\ufeff") and not new_text.startswith("\ufeff"):
        new_text = "\ufeff" + new_text
    return new_text


def _written_dependencies(plan: Plan, text: str) -> str:
    """The legacy Dependencies value as written, to keep words that slugs drop (link text, spacing)."""
    if "dependencies" not in plan.positions:
        return ""
    line, column = plan.positions["dependencies"]
    lines = split_lines(text)
    written = lines[line - 1][column - 1 :].strip() if 0 < line <= len(lines) else ""
    if written.lower() in ("", "none", "-", "n/a") or written == ", ".join(plan.dependencies):
        return ""
    return written


def canonical(plan: Plan, written_dependencies: str = "") -> str:
    """The plan written in canonical form: front matter in the canonical key order, then the body."""
    values: dict[str, object] = {
        "title": plan.title,
        "status": plan.status,
        "priority": plan.priority,
        "complexity": plan.complexity,
        "estimate": plan.estimate_text,
        "dependencies": list(plan.dependencies),
    }
    if "feature" in plan.positions:
        values["feature"] = plan.feature
    if plan.owner is not None:
        values["owner"] = plan.owner
    if plan.updated is not None:
        values["updated"] = plan.updated
    values.update(plan.extra)
    unanswered = written_dependencies in PLACEHOLDERS
    if unanswered:
        # `[]` would claim "no dependencies"; the placeholder stays the author's to-do (PL043).
        values["dependencies"] = written_dependencies
    lines = [f"{key}: {dump_value(value)}" for key, value in values.items()]
    if written_dependencies and not unanswered:
        # Slugs drop link text and spelling; the comment keeps the words as the author wrote them.
        index = list(values).index("dependencies")
        lines[index] += f"  # was: {written_dependencies}"
    body = plan.body.lstrip("\n")
    if not body.endswith("\n"):
        body += "\n"
    return "---\n" + "\n".join(lines) + "\n---\n" + body


def dump_value(value: object) -> str:
    """One YAML value on one line: plain when safe, quoted when needed, lists in flow style `[a, b]`."""
    dumped = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6, sort_keys=False)
    return dumped.removesuffix("\n").removesuffix("\n...").strip()
