"""Reading plan documents, canonical (YAML front matter) or legacy (`**Status:** ...` lines under the H1).

Parsing never raises on bad content: everything wrong with one file comes back as a list of Problems,
each with the line and column in the file (counting the `---` line) and a fix hint.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from frontmatter.default_handlers import YAMLHandler

from planner.config import PlannerConfig
from planner.estimate import parse_estimate
from planner.model import Design, Estimate, Plan, Section
from planner.problems import Problem, display_path
from planner.rulebook import problem

try:  # libyaml is several times faster; the pure-Python loader gives the same results
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

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
# The legacy template's metadata labels, lowercased, and the canonical key each one means.
LEGACY_LABELS = {
    "title": "title",
    "status": "status",
    "priority": "priority",
    "complexity": "complexity",
    "estimated time": "estimate",
    "estimate": "estimate",
    "time estimate": "estimate",
    "dependencies": "dependencies",
    "depends on": "dependencies",
    "feature": "feature",
    "owner": "owner",
    "updated": "updated",
    "last updated": "updated",
}
# The reference template's placeholder lines: a section still holding one is unwritten.
PLACEHOLDERS = frozenset(
    {
        "[What are we trying to achieve?]",
        "[Why is this valuable?]",
        "[How will this work?]",
        "Step 1",
        "Step 2",
        "Step 3",
        "Question 1?",
        "Question 2?",
        "[What other approaches were considered and why not chosen?]",
        "[Other features needed first]",
    }
)
# A line that is nothing but a placeholder (optionally as a list item): the reference template's text,
# or any `[bracketed prompt]` a project's own template uses.
_PLACEHOLDER_LINE = re.compile(
    r"\n[ \t]*(?:(?:[-*+]|\d+[.)])[ \t]+)?(?P<text>"
    + "|".join(re.escape(text) for text in sorted(PLACEHOLDERS, key=len, reverse=True))
    + r"|\[[^\[\]\n]+\])[ \t]*$",
    re.M,
)
FILE_NAME = re.compile(r"^(?P<prefix>[^-]+)-(?P<slug>.+)\.md$")
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_BOUNDARY = YAMLHandler.FM_BOUNDARY  # python-frontmatter's rule: a line of three or more dashes
_FRONT_MATTER_END = re.compile(r"^(?:-{3,}|\.\.\.)[ \t]*$", re.M)
_META_BOLD = re.compile(r"^(?:[-*+]\s+)?\*\*(?P<key>[^*\n]+?)(?::\*\*|\*\*\s*:)[ \t]*(?P<value>.*?)\s*$")
_META_PLAIN = re.compile(
    r"^(?:[-*+]\s+)?(?P<key>"
    + "|".join(re.escape(k) for k in LEGACY_LABELS)
    + r")[ \t]*:[ \t]*(?P<value>.*?)\s*$",
    re.IGNORECASE,
)
_BRACKETED = re.compile(r"^\[[^\[\]]+\]$")
_LINK = re.compile(r"^\[(?P<text>[^\]]*)\]\((?P<target>[^)]*)\)$")
_NONE_WORDS = frozenset({"", "none", "-", "n/a", "na", "nothing", "[]"})


class _Field:
    """A raw metadata value and where it was written (1-based line and column of the value).

    A plain slotted class rather than a dataclass: validate makes one per key of every plan.
    """

    __slots__ = ("column", "items", "line", "value")

    def __init__(self, value: object, line: int, column: int) -> None:
        self.value = value
        self.line = line
        self.column = column
        self.items: list[tuple[int, int]] = []  # per-item positions of a YAML list


@dataclass
class _Meta:
    fields: dict[str, _Field]
    legacy: bool
    body: str
    skip: range  # lines (0-based) that hold metadata, not body
    body_from: int  # first 0-based line of the body scan
    scan_text: str  # the text scanned for the H1 and sections, starting at line `body_from`


def slugify(text: str) -> str:
    """`Rate Limiting (v2)` -> `rate-limiting-v2`."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))


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


def suggest(value: str, choices: Sequence[str]) -> str | None:
    """The allowed value `value` most likely meant: a case slip first, then the closest spelling."""
    lowered = {choice.lower(): choice for choice in choices}
    if value.lower() in lowered:
        return lowered[value.lower()]
    squashed = {re.sub(r"[\s_-]", "", c.lower()): c for c in choices}
    if re.sub(r"[\s_-]", "", value.lower()) in squashed:
        return squashed[re.sub(r"[\s_-]", "", value.lower())]
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


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
        meta = _read_front_matter(text, first_newline, report)
    else:
        meta = _read_legacy(text.split("\n"), report)
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
    if meta.legacy:
        report(
            "PL006",
            meta.skip.start + 1,
            1,
            "legacy metadata lines (`**Status:** ...`)",
            f"run `planner fmt {display_path(path)}` to rewrite them as front matter",
        )
    h1, sections, section_lines = _scan_body(meta)
    plan = _build_plan(path, slug, file_priority, meta, h1, sections, config, report)
    _check_sections(path, sections, section_lines, max(line_count, 1), config, report)
    return plan, problems


Report = Callable[[str, int | None, int | None, str, str], None]


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


def _read_front_matter(text: str, first_newline: int, report: Report) -> _Meta | None:
    closing = _FRONT_MATTER_END.search(text, first_newline + 1) if first_newline >= 0 else None
    if closing is None:
        report(
            "PL004",
            1,
            1,
            "front matter opened on line 1 is never closed",
            "add a line `---` after the last metadata key",
        )
        return None
    # Only the front matter is split into lines; the body is scanned as one string.
    lines = text[: closing.start()].split("\n")
    end = len(lines) - 1
    lines[end] = closing.group()
    body = text[closing.end() + 1 :]
    simple = _simple_front_matter(lines, end)
    if simple is not None:
        return _Meta(simple, False, body, range(0), end + 1, body)
    source = "\n".join(lines[1:end])
    loader = _Loader(source)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark is not None else 2
        column = mark.column + 1 if mark is not None else 1
        what = exc.problem or "invalid YAML"
        if exc.context and exc.context_mark is not None and exc.context_mark.line + 2 != line:
            what += f" ({exc.context} on line {exc.context_mark.line + 2})"
        report(
            "PL003",
            line,
            column,
            f"front matter is not valid YAML: {what}",
            _yaml_hint(text.split("\n"), line),
        )
        return None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Constructors raise plain ValueErrors for values like the date 2024-13-45.
        report("PL003", 2, 1, f"front matter is not valid YAML: {exc}", "check the values' syntax")
        return None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode | type(None)):
        report(
            "PL004",
            2,
            1,
            f"front matter must be keys and values, not a {type(data).__name__}",
            "write one `key: value` per line, e.g. `status: Proposed`",
        )
        return None
    fields: dict[str, _Field] = {}
    for key_node, value_node in node.value if node is not None else []:
        line, column = key_node.start_mark.line + 2, key_node.start_mark.column + 1
        if not isinstance(key_node, yaml.ScalarNode):
            report("PL004", line, column, "a front-matter key must be a plain word", "write `key: value`")
            continue
        key = key_node.value
        if key in fields:
            report(
                "PL004",
                line,
                column,
                f"key {key!r} appears twice; the last one would silently win",
                "keep one of them",
            )
        value = data.get(key) if key in data else data.get(_coerce_key(key))
        fld = _Field(value, value_node.start_mark.line + 2, value_node.start_mark.column + 1)
        if isinstance(value_node, yaml.SequenceNode):
            fld.items = [(n.start_mark.line + 2, n.start_mark.column + 1) for n in value_node.value]
        fields[key] = fld
    return _Meta(fields, False, body, range(0), end + 1, body)


# The fast path: most front matter is `key: plain words` and `key: [slug, slug]`, which needs no YAML
# parser. Anything else (quotes with escapes, comments, nesting, values YAML would read as numbers, dates,
# booleans or null) goes to the real parser, so results are always what YAML itself gives.
_SIMPLE_LINE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_-]*):(?:[ ]+(?P<value>\S.*?))?[ ]*$")
_PLAIN_WORDS = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9 ._/()+,'?!&%=-]*"  # words: `Response Caching`, `In Progress`
    r"|~?\d[\d.-]*[ ]+[A-Za-z][A-Za-z0-9 ._()-]*)$"  # estimates: `3-5 days`, `~1 week`
)
_QUOTED = re.compile(r"^'(?P<single>[^'\n]*)'$|^\"(?P<double>[^\"\\\n]*)\"$")
_LIST_ITEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")
_YAML_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null", "y", "n"})


def _simple_front_matter(lines: list[str], end: int) -> dict[str, _Field] | None:
    """Front matter read without a YAML parser when every line is simple enough; None to use the parser."""
    fields: dict[str, _Field] = {}
    for index in range(1, end):
        line = lines[index]
        if not line.strip():
            continue
        match = _SIMPLE_LINE.match(line)
        if match is None:
            return None
        key, value = match["key"], match["value"]
        if key in fields or key.lower() in _YAML_WORDS or "#" in line:
            return None
        column = match.start("value") + 1 if value is not None else len(line) + 1
        fld = _Field(None, index + 1, column)
        if value is None:
            pass
        elif value[0] == "[" and value[-1] == "]":
            items: list[object] = []
            offset = match.start("value") + 1
            for part in value[1:-1].split(","):
                item = part.strip()
                if not item:
                    if part.strip() or value[1:-1].strip():
                        return None  # `[a,,b]` or `[a, ]`: let YAML decide
                    continue
                if not _LIST_ITEM.match(item) or item.lower() in _YAML_WORDS or not item[0].isalpha():
                    return None
                items.append(item)
                fld.items.append((index + 1, offset + len(part) - len(part.lstrip()) + 1))
                offset += len(part) + 1
            fld.value = items
        elif _PLAIN_WORDS.match(value) and value.lower() not in _YAML_WORDS:
            fld.value = value
        elif _DATE.match(value):
            try:
                fld.value = dt.date.fromisoformat(value)  # what YAML makes of it
            except ValueError:
                return None  # let YAML report the impossible date
        else:
            quoted = _QUOTED.match(value)
            if quoted is None:
                return None
            fld.value = quoted["single"] if quoted["single"] is not None else quoted["double"]
        fields[key] = fld
    return fields


def _coerce_key(key: str) -> object:
    # YAML turns keys such as `1` or `yes` into non-strings; find the constructed key again.
    try:
        return yaml.load(key, Loader=_Loader)
    except yaml.YAMLError:
        return key


def _yaml_hint(lines: list[str], line: int) -> str:
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    if ":" in text and re.search(r":\s*[^\s'\"].*:\s", text):
        return "quote values that contain ': ', e.g. title: \"Caching: phase 1\""
    if "\t" in text:
        return "YAML does not allow tabs for indentation; use spaces"
    return "check the indentation and quoting on this line and the one before"


def _read_legacy(lines: list[str], report: Report) -> _Meta | None:
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return None
    start = first + 1 if lines[first].startswith("# ") else first
    fields: dict[str, _Field] = {}
    i, block_start, block_end = start, None, start
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        match = _META_BOLD.match(line) or _META_PLAIN.match(line)
        if match is None:
            break
        if block_start is None:
            block_start = i
        label = match["key"].strip()
        key = LEGACY_LABELS.get(label.lower(), re.sub(r"\W+", "_", label.lower()).strip("_") or "extra")
        if key in fields:
            report("PL004", i + 1, 1, f"metadata {label!r} appears twice", "keep one of the lines")
        fields[key] = _Field(match["value"], i + 1, match.start("value") + 1)
        i += 1
        block_end = i
    if block_start is None or not any(k in fields for k in ("status", "priority", "estimate", "complexity")):
        return None
    body_lines = [*lines[:start], *([""] if start > first else []), *lines[block_end:]]
    while start > first and len(body_lines) > start + 1 and not body_lines[start + 1].strip():
        del body_lines[start + 1]  # one blank line between the H1 and the first section
    scan = "\n".join([*lines[:block_start], *([""] * (block_end - block_start)), *lines[block_end:]])
    return _Meta(fields, True, "\n".join(body_lines), range(block_start, block_end), 0, scan)


def _scan_body(meta: _Meta) -> tuple[tuple[str, int] | None, list[Section], list[tuple[int, str]]]:
    """The H1 (text, line) and the `##` sections, skipping fenced code; also each section's raw body with
    the line number of its first line.

    Only headings and fences shape a document, and `str.find` locates them far faster than looking at
    every line (validate runs this over thousands of files).
    """
    text = "\n" + meta.scan_text
    hits: list[int] = []
    for needle in ("\n#", "```", "~~~"):
        if needle[-1] not in text:
            continue  # a one-character test is far cheaper than looking for a missing longer string
        found = text.find(needle)
        while found >= 0:
            hits.append(found)
            found = text.find(needle, found + 1)
    hits.sort()
    h1: tuple[str, int] | None = None
    heads: list[tuple[str, int, int, int]] = []  # title, line, offsets of the heading line's newline and end
    fence = ""
    line, position, handled = meta.body_from, 0, -1
    for hit in hits:
        if text.startswith("\n###", hit):
            continue  # a deeper heading belongs to the section's body
        start = hit + 1 if text[hit] == "\n" else text.rfind("\n", 0, hit) + 1
        if start == handled:
            continue  # a second hit on a line already looked at
        handled = start
        stop = text.find("\n", start)
        stop = len(text) if stop < 0 else stop
        content = text[start:stop]
        if text[hit] != "\n":
            if hit - start > 3 or text[start:hit].strip(" "):
                continue  # fence characters inside a line, or indented code
            marker = content.lstrip(" ")[:3]
            fence = marker if not fence else ("" if marker == fence else fence)
            continue
        if fence:
            continue
        if content.startswith("## ") or content.rstrip() == "##":
            line += text.count("\n", position, start)
            position = start
            heads.append((content[2:].strip().rstrip("#").strip(), line, start - 1, stop))
        elif h1 is None and not heads and (content.startswith("# ") or content.rstrip() == "#"):
            line += text.count("\n", position, start)
            position = start
            h1 = (content[1:].strip().rstrip("#").strip(), line)
    sections: list[Section] = []
    bodies: list[tuple[int, str]] = []
    for number, (title, head_line, _, head_end) in enumerate(heads):
        stop = heads[number + 1][2] if number + 1 < len(heads) else len(text)  # at the next heading's newline
        raw = text[head_end + 1 : stop]
        bodies.append((head_line + 1, raw))
        sections.append(Section(title, raw.strip(), head_line))
    return h1, sections, bodies


def _text(key: str, fields: dict[str, _Field], report: Report) -> str:
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


def _dependencies(fields: dict[str, _Field], legacy: bool, report: Report) -> tuple[str, ...]:
    fld = fields.get("dependencies")
    if fld is None or fld.value is None:
        return ()
    value = fld.value
    positions: list[tuple[int, int]] = []
    if isinstance(value, str):
        text = value.strip()
        if text in PLACEHOLDERS or (legacy and _BRACKETED.match(text)):
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
    meta: _Meta,
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
        fields["title"] = _Field(h1[0], h1[1], 3)
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
        ("status", config.statuses),
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
        if key in KNOWN_KEYS:
            continue
        extra[key] = fld.value
        if meta.legacy:
            continue  # unknown bold lines are kept as extra metadata on purpose
        guess = KEY_ALIASES.get(key.lower()) or suggest(key, KNOWN_KEYS)
        report(
            "PL014",
            fld.line,
            1,
            f"unknown front-matter key {key!r}",
            f"did you mean {guess!r}?" if guess else f"known keys: {', '.join(KNOWN_KEYS)}",
        )
    title = values["title"]
    if title and _BRACKETED.match(title):
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
        extra=extra,
        positions=positions,
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


def _check_sections(
    path: Path,
    sections: list[Section],
    bodies: list[tuple[int, str]],
    line_count: int,
    config: PlannerConfig,
    report: Report,
) -> None:
    required = config.sections
    order = {title: index for index, title in enumerate(required)}
    seen: dict[str, int] = {}
    highest: tuple[int, str] | None = None
    for section, body in zip(sections, bodies, strict=True):
        if section.title in seen:
            report(
                "PL044",
                section.line,
                1,
                f"section {section.title!r} appears twice (first on line {seen[section.title]})",
                "merge the two sections",
            )
            continue
        seen[section.title] = section.line
        if section.title not in order:
            continue
        position = order[section.title]
        if highest is not None and position < highest[0]:
            report(
                "PL041",
                section.line,
                1,
                f"section {section.title!r} comes after {highest[1]!r}",
                f"the template order is: {', '.join(required)}",
            )
        elif highest is None or position > highest[0]:
            highest = (position, section.title)
        if not section.body:
            report(
                "PL042",
                section.line,
                1,
                f"section {section.title!r} is empty",
                "write it, or say why it does not apply",
            )
            continue
        first_line, raw = body
        maybe = "[" in raw or "Step" in raw or "?" in raw  # cheap test before the regex
        placeholder = _PLACEHOLDER_LINE.search("\n" + raw) if maybe else None
        if placeholder:
            report(
                "PL043",
                first_line + raw.count("\n", 0, placeholder.start()),
                1,
                f"section {section.title!r} still holds the template placeholder {placeholder['text']!r}",
                "replace it with the real content",
            )
    titles = [s.title for s in sections]
    for title in required:
        if title in seen:
            continue
        guess = suggest(title, [t for t in titles if t not in order])
        if guess:
            line = seen[guess]
            report(
                "PL040",
                line,
                1,
                f"required section {title!r} is missing; found {guess!r} instead",
                f"rename the heading to `## {title}`",
            )
        else:
            report(
                "PL040",
                line_count,
                1,
                f"required section {title!r} is missing",
                f"add `## {title}` (sections in order: {', '.join(required)})",
            )


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
        front = _quiet_front_matter(text)
        title = front.get("title")
        if not isinstance(title, str) or not title.strip():
            title = next(
                (line[2:].strip() for line in split_lines(text) if line.startswith("# ")),
                title_from_slug(path.stem),
            )
        feature = front.get("feature")
        designs.append(
            Design(
                path=path,
                slug=path.stem,
                title=title.strip(),
                feature=feature.strip() if isinstance(feature, str) and feature.strip() else path.stem,
            )
        )
    return designs


def _quiet_front_matter(text: str) -> dict[str, object]:
    """Front matter of a page that is not a plan: best effort, problems are not ours to report."""
    lines = split_lines(text.removeprefix("\ufeff"))
    if not lines or lines[0].rstrip() != "---":
        return {}
    end = next((i for i in range(1, len(lines)) if _BOUNDARY.match(lines[i])), None)
    if end is None:
        return {}
    try:
        data = yaml.load("\n".join(lines[1:end]), Loader=_Loader)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}
