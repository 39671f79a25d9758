"""The catalogue of validation rules: every problem planner reports has one of these codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from planner.problems import Problem, Severity


@dataclass(frozen=True)
class Rule:
    """One check: its stable code, a short name, its severity and why it exists."""

    code: str
    name: str
    severity: Severity
    why: str


RULES: tuple[Rule, ...] = (
    Rule(
        "PL001",
        "file-name",
        "error",
        "files are named PRIORITY-slug.md so priority and slug read at a glance",
    ),
    Rule("PL002", "unreadable", "error", "a plan must be a readable UTF-8 text file"),
    Rule("PL003", "yaml-syntax", "error", "front matter that is not valid YAML cannot be read at all"),
    Rule(
        "PL004", "front-matter-shape", "error", "front matter is one closed block of unique keys and values"
    ),
    Rule("PL005", "no-metadata", "error", "without front matter or legacy metadata lines nothing is known"),
    Rule(
        "PL010",
        "required-field",
        "error",
        "title, status, priority, complexity, estimate and dependencies drive the roadmap",
    ),
    Rule("PL011", "field-type", "error", "a field of the wrong type (a list for a title) cannot be used"),
    Rule(
        "PL012", "allowed-value", "error", "status, priority and complexity take only the configured values"
    ),
    Rule("PL013", "priority-mismatch", "error", "the file name's priority and the field must agree"),
    Rule(
        "PL014", "unknown-key", "warning", "an unknown key is usually a misspelt one and is otherwise ignored"
    ),
    Rule(
        "PL015",
        "not-a-slug",
        "error",
        "dependencies and feature keys are slugs: lowercase words joined by '-'",
    ),
    Rule(
        "PL016",
        "optional-metadata",
        "error",
        "target, health and review fields are optional but, when written, must be well-formed to be shown",
    ),
    Rule(
        "PL020",
        "duplicate-slug",
        "error",
        "one feature, one plan: two files with one slug contradict each other",
    ),
    Rule(
        "PL021",
        "slug-is-design",
        "error",
        "a completed feature's slug belongs to its design page, not to a new plan",
    ),
    Rule("PL030", "missing-h1", "error", "the page needs its `# Title` heading"),
    Rule("PL031", "title-mismatch", "error", "the title field and the H1 must say the same thing"),
    Rule("PL040", "missing-section", "error", "every plan answers the template's questions"),
    Rule("PL041", "section-order", "error", "sections in template order make plans comparable"),
    Rule(
        "PL042",
        "empty-section",
        "error",
        "an empty section is an unanswered question (a warning while the plan is a draft, Proposed)",
    ),
    Rule(
        "PL043",
        "placeholder",
        "error",
        "template placeholder text is the author's to-do, not content (a warning in a Proposed draft)",
    ),
    Rule("PL044", "duplicate-section", "warning", "a section written twice is usually a merge leftover"),
    Rule(
        "PL045",
        "to-do-section",
        "warning",
        "a section holding only TODO, TBD, '...', '-', '?' or an HTML comment is not written yet",
    ),
    Rule("PL050", "estimate", "error", "estimates must read as working days for the schedule"),
    Rule("PL060", "unknown-dependency", "error", "a dependency must be a plan or a completed design"),
    Rule("PL061", "self-dependency", "error", "a plan cannot wait for itself"),
    Rule("PL062", "dependency-cycle", "error", "plans that wait for each other can never start"),
    Rule("PL063", "blocked-in-progress", "warning", "work started before what it depends on is completed"),
    Rule("PL064", "duplicate-dependency", "warning", "a dependency listed twice is noise"),
    Rule("PL070", "completed-in-plans", "error", "completed features move their decisions to docs/design/"),
    Rule("PL071", "superseded-without-successor", "error", "a Superseded plan names what replaces it"),
    Rule("PL072", "unknown-successor", "error", "superseded_by must name another plan or a completed design"),
    Rule("PL073", "successor-not-superseded", "warning", "superseded_by on a plan that is not Superseded"),
    Rule(
        "PL080",
        "template",
        "error",
        "plans/_template.md must render (jinja2, known variables) into a valid plan, or `planner new` fails",
    ),
    Rule(
        "PL081",
        "template-prefilled",
        "warning",
        "a template section that validation accepts as written lets a new plan pass without being filled",
    ),
)

RULE_BY_CODE: dict[str, Rule] = {rule.code: rule for rule in RULES}


def problem(
    code: str, path: Path, line: int | None, column: int | None, message: str, hint: str = ""
) -> Problem:
    """A Problem for rule `code`, with the rule's severity."""
    return Problem(path, line, column, code, RULE_BY_CODE[code].severity, message, hint)
