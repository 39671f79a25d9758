"""Reading plan documents, canonical (YAML front matter) or legacy (`**Status:** ...` lines under the H1).

Parsing never raises on bad content: everything wrong with one file comes back as a list of Problems,
each with the line and column in the file (counting the `---` line) and a fix hint. `planner.metadata`
reads the metadata, `planner.sections` the body; this module checks the fields and builds the `Plan`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import unicodedata
from pathlib import Path

import yaml

from planner.config import PlannerConfig
from planner.estimate import parse_estimate
from planner.metadata import (
    BOUNDARY,
    LEGACY_LABELS,
    Field,
    Meta,
    Report,
    loader_for,
    read_front_matter,
    read_legacy,
)
from planner.model import STEPS_SECTION, Design, Estimate, Plan, Section, parse_steps
from planner.problems import Problem, suggest
from planner.rulebook import problem
from planner.sections import BRACKETED, PLACEHOLDERS, UNFILLED, check_sections, scan_body
from planner.tracking import OPTIONAL_KEYS, Tracking, read_tracking

# Re-exported: the editing and formatting modules read them from here.
__all__ = [
    "FILE_NAME",
    "KNOWN_KEYS",
    "LEGACY_LABELS",
    "PLACEHOLDERS",
    "SLUG",
    "load_designs",
    "parse_plan",
    "priority_prefixes",
    "quiet_front_matter",
    "slug_from_name",
    "slugify",
    "split_lines",
    "suggest",
    "title_from_slug",
]

KNOWN_KEYS = (
    "title",
    "status",
    "priority",
    "complexity",
    "estimate",
    "dependencies",
    "feature",
    "owner",
    "updated",
    "superseded_by",
)
REQUIRED_KEYS = ("title", "status", "priority", "complexity", "estimate", "dependencies")
# Keys people reach for that mean one of ours.
KEY_ALIASES = {
    "estimated_time": "estimate",
    "estimated-time": "estimate",
    "estimated time": "estimate",
    "time": "estimate",
    "eta": "estimate",
    "depends": "dependencies",
    "depends_on": "dependencies",
    "depends-on": "dependencies",
    "deps": "dependencies",
    "requires": "dependencies",
    "name": "title",
    "state": "status",
    "author": "owner",
    "assignee": "owner",
    "last_updated": "updated",
    "date": "updated",
}
FILE_NAME = re.compile(r"^(?P<prefix>[^-]+)-(?P<slug>.+)\.md$")
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_LINK = re.compile(r"^\[(?P<text>[^\]]*)\]\((?P<target>[^)]*)\)$")
_NONE_WORDS = frozenset({"", "none", "-", "n/a", "na", "nothing", "[]"})


# Letters that Unicode does not decompose into a base letter and an accent, spelt as ASCII.
_ASCII_LETTERS = str.maketrans(
    {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ð": "d", "ł": "l", "þ": "th", "ı": "i"}
)


def slugify(text: str) -> str:
    """`Rate Limiting (v2)` -> `rate-limiting-v2`; accented letters keep their base letter (`Ünï` -> `uni`,
    `Straße` -> `strasse`) rather than being dropped."""
    decomposed = unicodedata.normalize("NFKD", text.lower().translate(_ASCII_LETTERS))
    ascii_text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return "-".join(re.findall(r"[a-z0-9]+", ascii_text))


def title_from_slug(slug: str) -> str:
    """`response-caching` -> `Response Caching`."""
    return " ".join(word.capitalize() for word in slug.split("-"))


def split_lines(text: str) -> list[str]:
    """Lines as an editor numbers them (str.splitlines also breaks on form feeds and other separators)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def priority_prefixes(config: PlannerConfig) -> dict[str, str]:
    """File-name prefix -> priority value: `HIGH` -> `High`."""
    return dict(_prefixes(config.priorities))


@functools.lru_cache(maxsize=8)
def _prefixes(priorities: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((p.upper(), p) for p in priorities)


def slug_from_name(path: Path, config: PlannerConfig) -> tuple[str, str | None]:
    """(slug, priority from the prefix or None) read from a file name, best effort for malformed names."""
    match = FILE_NAME.match(path.name)
    if match:
        priority = priority_prefixes(config).get(match["prefix"].upper())
        if priority is not None:
            return match["slug"].lower(), (priority if match["prefix"].isupper() else None)
    return path.stem.lower(), None


def parse_plan(path: Path, text: str, config: PlannerConfig) -> tuple[Plan | None, list[Problem]]:
    """Read one plan. Returns the Plan (None when its metadata cannot be read) and every problem found."""
    problems: list[Problem] = []

    def report(code: str, line: int | None, column: int | None, message: str, hint: str = "") -> None:
        problems.append(problem(code, path, line, column, message, hint))

    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    slug, file_priority = _check_file_name(path, config, report)
    first_newline = text.find("\n")
    has_front_matter = (text if first_newline < 0 else text[:first_newline]).rstrip() == "---"
    line_count = text.count("\n") + (0 if text.endswith("\n") else 1)
    if has_front_matter:
        meta = read_front_matter(text, first_newline, report)
    else:
        meta = read_legacy(text.split("\n"), report)
    if meta is None:
        if not has_front_matter:  # broken front matter was reported already
            report(
                "PL005",
                1,
                1,
                "no metadata: neither YAML front matter nor `**Status:**` lines were found",
                "start the file with front matter, e.g. `planner new HIGH-my-feature` shows the layout",
            )
        return None, problems
    # The bold-field form is the reference template's own: valid as written, never a warning. `planner fmt`
    # converts it to front matter for those who want that, but nothing requires it.
    h1, sections, section_lines = scan_body(meta)
    plan = _build_plan(path, slug, file_priority, meta, h1, sections, config, report)
    before = len(problems)
    check_sections(path, sections, section_lines, max(line_count, 1), config, report)
    if plan is not None and config.lifecycle and plan.status == config.lifecycle[0]:
        # A plan in its first status is a draft (`planner new` writes one): its unwritten sections are the
        # author's to-do list, reported as warnings so it can be built and shown; from the next status on
        # they are errors. `validate --strict` still fails on them.
        problems[before:] = [
            dataclasses.replace(
                found,
                severity="warning",
                hint=f"{found.hint} (a warning while the plan is {plan.status}, an error after)",
            )
            if found.code in UNFILLED and found.severity == "error"
            else found
            for found in problems[before:]
        ]
    return plan, problems


def _check_file_name(path: Path, config: PlannerConfig, report: Report) -> tuple[str, str | None]:
    slug, file_priority = slug_from_name(path, config)
    match = FILE_NAME.match(path.name)
    prefixes = priority_prefixes(config)
    example = f"{next(iter(prefixes))}-response-caching.md"
    if match and match["prefix"] in prefixes and SLUG.match(match["slug"]):
        return slug, file_priority
    if match and match["prefix"].upper() in prefixes:
        good = f"{match['prefix'].upper()}-{slugify(match['slug']) or 'my-feature'}.md"
        report(
            "PL001",
            None,
            None,
            f"file name {path.name!r} is not PRIORITY-slug.md with a lowercase slug",
            f"rename it to {good!r}",
        )
    else:
        options = "|".join(prefixes)
        report(
            "PL001",
            None,
            None,
            f"file name {path.name!r} does not start with a priority ({options})",
            f"name plans like {example!r}",
        )
    return slugify(slug) or slug, file_priority


def _text(key: str, fields: dict[str, Field], report: Report) -> str:
    fld = fields.get(key)
    if fld is None or fld.value is None:
        return ""
    value = fld.value
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool | int | float | str):
        return str(value).strip()
    report(
        "PL011",
        fld.line,
        fld.column,
        f"{key} must be text, not a {_kind(value)}",
        f"write `{key}: some text` on one line",
    )
    return ""


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _dependencies(fields: dict[str, Field], legacy: bool, report: Report) -> tuple[str, ...]:
    fld = fields.get("dependencies")
    if fld is None or fld.value is None:
        return ()
    value = fld.value
    positions: list[tuple[int, int]] = []
    if isinstance(value, str):
        text = value.strip()
        if text in PLACEHOLDERS or (legacy and BRACKETED.match(text)):
            report(
                "PL043",
                fld.line,
                fld.column,
                f"dependencies still hold the template placeholder {text!r}",
                "list the slugs this plan needs first, or write `None`",
            )
            return ()
        if text.lower() in _NONE_WORDS:
            return ()
        items: list[object] = [part.strip() for part in re.split(r",|;", text) if part.strip()]
        positions = [(fld.line, fld.column)] * len(items)
    elif isinstance(value, list):
        items = value
        positions = fld.items
    else:
        report(
            "PL011",
            fld.line,
            fld.column,
            f"dependencies must be a list of slugs, not a {_kind(value)}",
            "write `dependencies: [rate-limiting, usage-tracking-analytics]` or `dependencies: []`",
        )
        return ()
    slugs: list[str] = []
    for index, item in enumerate(items):
        line, column = positions[index] if index < len(positions) else (fld.line, fld.column)
        if not isinstance(item, str):
            report(
                "PL011",
                line,
                column,
                f"dependency {item!r} must be a slug, not a {_kind(item)}",
                "write the other plan's slug, e.g. rate-limiting",
            )
            continue
        dep = _dependency_slug(item.strip())
        if legacy and not SLUG.match(dep):
            dep = slugify(dep) or dep  # legacy lines name features in words: `Rate Limiting`
        if not SLUG.match(dep):
            hint = f"did you mean {slugify(dep)!r}?" if slugify(dep) else "use the other plan's slug"
            report("PL015", line, column, f"dependency {item!r} is not a slug", hint)
            continue
        slugs.append(dep)
    return tuple(slugs)


def _dependency_slug(item: str) -> str:
    """A dependency as written: a slug, a file name, or a Markdown link to the plan."""
    link = _LINK.match(item)
    if link:
        item = link["target"] or link["text"]
    item = item.strip().strip("`")
    if item.endswith(".md"):
        stem = Path(item).stem
        match = re.match(r"^(?:[A-Z]+)-(.+)$", stem)
        return match[1] if match else stem
    return item


def _build_plan(
    path: Path,
    slug: str,
    file_priority: str | None,
    meta: Meta,
    h1: tuple[str, int] | None,
    sections: list[Section],
    config: PlannerConfig,
    report: Report,
) -> Plan:
    fields = meta.fields
    form = (
        "a line `**{label}:** value` under the title" if meta.legacy else "`{key}: value` to the front matter"
    )
    if meta.legacy and "title" not in fields and h1 is not None:
        fields["title"] = Field(h1[0], h1[1], 3)
    for key in REQUIRED_KEYS:
        if key == "title" and meta.legacy and h1 is None:
            continue  # the missing H1 is reported below
        if key not in fields or (key != "dependencies" and _blank(fields[key].value)):
            label = {"estimate": "Estimated Time"}.get(key, key.capitalize())
            example = _EXAMPLES[key]
            report(
                "PL010",
                fields[key].line if key in fields else 1,
                fields[key].column if key in fields else 1,
                f"required field {key!r} is missing",
                "add " + form.format(label=label, key=key).replace("value", example),
            )
    values: dict[str, str] = {}
    for key in _TEXT_KEYS:
        fld = fields.get(key)
        value = fld.value if fld is not None else None
        # Plain strings are nearly every value: skip the general conversion for them.
        values[key] = value.strip() if value.__class__ is str else _text(key, fields, report)
    for key, allowed in (
        ("status", config.all_statuses),
        ("priority", config.priorities),
        ("complexity", config.complexities),
    ):
        value = values[key]
        if value and value not in allowed:
            fld = fields[key]
            guess = suggest(value, allowed)
            if "|" in value:
                message, hint = f"{key} {value!r} lists choices", f"pick one of: {', '.join(allowed)}"
            else:
                message = f"{key} {value!r} is not one of {', '.join(allowed)}"
                hint = f"did you mean {guess!r}?" if guess else f"use one of: {', '.join(allowed)}"
            report("PL012", fld.line, fld.column, message, hint)
    if file_priority and values["priority"] in config.priorities and values["priority"] != file_priority:
        fld = fields["priority"]
        report(
            "PL013",
            fld.line,
            fld.column,
            f"priority {values['priority']!r} does not match the file name's {file_priority.upper()}",
            f"run `planner priority {slug} {values['priority']}` to rename the file, "
            f"or set priority: {file_priority}",
        )
    estimate: Estimate | None = None
    if values["estimate"]:
        try:
            estimate = parse_estimate(values["estimate"], config.units)
        except ValueError as exc:
            fld = fields["estimate"]
            report(
                "PL050", fld.line, fld.column, str(exc), "write it like `3 days`, `2 weeks` or `~1-2 months`"
            )
    dependencies = _dependencies(fields, meta.legacy, report)
    feature = values["feature"] or slug
    if "feature" in fields and values["feature"] and not re.match(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$", feature):
        fld = fields["feature"]
        report(
            "PL015",
            fld.line,
            fld.column,
            f"feature {feature!r} is not a slug",
            f"did you mean {slugify(feature)!r}?",
        )
    extra: dict[str, object] = {}
    for key, fld in fields.items():
        if key in KNOWN_KEYS or key in OPTIONAL_KEYS:
            continue
        extra[key] = fld.value
        if meta.legacy:
            continue  # unknown bold lines are kept as extra metadata on purpose
        guess = KEY_ALIASES.get(key.lower()) or suggest(key, KNOWN_KEYS + OPTIONAL_KEYS)
        report(
            "PL014",
            fld.line,
            1,
            f"unknown front-matter key {key!r}",
            f"did you mean {guess!r}?" if guess else f"known keys: {', '.join(KNOWN_KEYS)}",
        )
    title = values["title"]
    if title and BRACKETED.match(title):
        fld = fields["title"]
        report(
            "PL043",
            fld.line,
            fld.column,
            f"the title still holds the template placeholder {title!r}",
            "name the feature, e.g. `Response Caching`",
        )
    if h1 is None:
        report(
            "PL030",
            meta.body_from + 1 if not meta.legacy else 1,
            1,
            "the page has no `# Title` heading",
            f"add `# {title or title_from_slug(slug)}` before the first section",
        )
    elif title and h1[0] != title and not meta.legacy:
        report(
            "PL031",
            h1[1],
            1,
            f"H1 {h1[0]!r} does not match the title {title!r}",
            "make the `# heading` and the `title:` field the same",
        )
    tracking = read_tracking(fields, report) if any(key in fields for key in OPTIONAL_KEYS) else Tracking()
    positions = {key: (fld.line, fld.column) for key, fld in fields.items()}
    return Plan(
        path=path,
        slug=slug,
        file_priority=file_priority,
        title=title,
        status=values["status"],
        priority=values["priority"],
        complexity=values["complexity"],
        estimate=estimate,
        estimate_text=values["estimate"],
        dependencies=dependencies,
        feature=feature,
        owner=values["owner"] or None,
        updated=values["updated"] or None,
        h1=h1[0] if h1 else None,
        sections=tuple(sections),
        body=meta.body,
        legacy=meta.legacy,
        superseded_by=_dependency_slug(values["superseded_by"]) if values["superseded_by"] else None,
        extra=extra,
        positions=positions,
        tracking=tracking,
    )


_TEXT_KEYS = tuple(key for key in KNOWN_KEYS if key != "dependencies")
_EXAMPLES = {
    "title": "Response Caching",
    "status": "Proposed",
    "priority": "High",
    "complexity": "Moderate",
    "estimate": "1 week",
    "dependencies": "[]",
}


def load_designs(config: PlannerConfig) -> list[Design]:
    """Completed features' design pages: `docs/design/*.md` except index.md, sorted by slug."""
    folder = config.design_path
    if not folder.is_dir():
        return []
    designs = []
    for path in sorted(folder.glob("*.md")):
        if path.name == "index.md":
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = ""
        front = quiet_front_matter(text)
        title = front.get("title")
        if not isinstance(title, str) or not title.strip():
            title = next(
                (line[2:].strip() for line in split_lines(text) if line.startswith("# ")),
                title_from_slug(path.stem),
            )
        feature = front.get("feature")
        _, sections, _ = scan_body(_design_meta(text))
        steps_section = next((s for s in sections if s.title == STEPS_SECTION), None)
        priority = front.get("priority")
        if isinstance(priority, str):  # `high` on a hand-written page still means the configured `High`
            priority = next((p for p in config.priorities if p.lower() == priority.strip().lower()), priority)
        designs.append(
            Design(
                path=path,
                slug=path.stem,
                title=title.strip(),
                feature=feature.strip() if isinstance(feature, str) and feature.strip() else path.stem,
                steps=parse_steps(steps_section.body) if steps_section is not None else (),
                priority=priority.strip() if isinstance(priority, str) and priority.strip() else None,
                owner=_front_text(front, "owner"),
                completed=_front_text(front, "completed"),
            )
        )
    return designs


def _front_text(front: dict[str, object], key: str) -> str | None:
    value = front.get(key)
    if isinstance(value, dt.date | str | int | float) and str(value).strip():
        return str(value).strip()
    return None


def _design_meta(text: str) -> Meta:
    """The body of a design page (after its front matter) in the shape `scan_body` reads."""
    lines = split_lines(text.removeprefix("\ufeff"))
    start = 0
    if lines and lines[0].rstrip() == "---":
        end = next((i for i in range(1, len(lines)) if BOUNDARY.match(lines[i])), None)
        start = end + 1 if end is not None else 0
    body = "\n".join(lines[start:])
    return Meta(fields={}, body=body, body_from=start, legacy=False, skip=range(0), scan_text=body)


def quiet_front_matter(text: str) -> dict[str, object]:
    """Front matter of a page that is not a plan: best effort, problems are not ours to report."""
    lines = split_lines(text.removeprefix("\ufeff"))
    if not lines or lines[0].rstrip() != "---":
        return {}
    end = next((i for i in range(1, len(lines)) if BOUNDARY.match(lines[i])), None)
    if end is None:
        return {}
    try:
        source = "\n".join(lines[1:end])
        data = yaml.load(source, Loader=loader_for(source))
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}
