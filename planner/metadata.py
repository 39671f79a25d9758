"""Reading a plan's metadata: YAML front matter (with a fast path for simple files) or legacy lines.

Both readers return a `Meta`: each key's raw value with the line and column where it was written, the body
that follows, and the text to scan for headings. Problems go to the `Report` callback, never as exceptions.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

import yaml
from frontmatter.default_handlers import YAMLHandler

try:  # libyaml is several times faster; the pure-Python loader gives the same results
    from yaml import CSafeLoader as Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as Loader  # type: ignore[assignment]

# libyaml recurses on the C stack: a few ten thousand nesting levels kill the process instead of raising.
# Nesting is at most the flow brackets plus the longest line deep, so front matter that could nest that far
# goes to the pure-Python loader, whose recursion ends in a RecursionError that is reported.
_C_LOADER_MAX_DEPTH = 5000


def loader_for(source: str) -> type[yaml.SafeLoader]:
    """The fast libyaml loader, or the pure-Python one for text that could nest too deep for libyaml."""
    longest = max((len(line) for line in source.split("\n")), default=0)
    if source.count("[") + source.count("{") + longest <= _C_LOADER_MAX_DEPTH:
        return Loader  # type: ignore[return-value]
    return yaml.SafeLoader


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
    "superseded by": "superseded_by",
}
BOUNDARY = YAMLHandler.FM_BOUNDARY  # python-frontmatter's rule: a line of three or more dashes
_FRONT_MATTER_END = re.compile(r"^(?:-{3,}|\.\.\.)[ \t]*$", re.M)
_META_BOLD = re.compile(r"^(?:[-*+]\s+)?\*\*(?P<key>[^*\n]+?)(?::\*\*|\*\*\s*:)[ \t]*(?P<value>.*?)\s*$")
_META_PLAIN = re.compile(
    r"^(?:[-*+]\s+)?(?P<key>"
    + "|".join(re.escape(k) for k in LEGACY_LABELS)
    + r")[ \t]*:[ \t]*(?P<value>.*?)\s*$",
    re.IGNORECASE,
)


class Field:
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
class Meta:
    """What a metadata reader found in one file."""

    fields: dict[str, Field]
    legacy: bool
    body: str
    skip: range  # lines (0-based) that hold metadata, not body
    body_from: int  # first 0-based line of the body scan
    scan_text: str  # the text scanned for the H1 and sections, starting at line `body_from`


Report = Callable[[str, int | None, int | None, str, str], None]


def read_front_matter(text: str, first_newline: int, report: Report) -> Meta | None:
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
    simple = simple_front_matter(lines, end)
    if simple is not None:
        return Meta(simple, False, body, range(0), end + 1, body)
    source = "\n".join(lines[1:end])
    loader = loader_for(source)(source)
    node = None
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
    except RecursionError:
        report(
            "PL003",
            2,
            1,
            "front matter is not valid YAML: it is nested too deeply to read",
            "metadata values are text or a flat list of slugs",
        )
        return None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        # Constructors raise plain ValueErrors, without a position, for values like the date 2024-13-45.
        line = _failing_line(node, source) if node is not None else 2
        report("PL003", line, 1, f"front matter is not valid YAML: {exc}", "check the values' syntax")
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
    fields: dict[str, Field] = {}
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
        fld = Field(value, value_node.start_mark.line + 2, value_node.start_mark.column + 1)
        if isinstance(value_node, yaml.SequenceNode):
            fld.items = [(n.start_mark.line + 2, n.start_mark.column + 1) for n in value_node.value]
        fields[key] = fld
    return Meta(fields, False, body, range(0), end + 1, body)


def _failing_line(node: yaml.Node, source: str) -> int:
    """The file line of the first top-level value that cannot be built (2 when none can be singled out)."""
    if isinstance(node, yaml.MappingNode):
        for _key, value_node in node.value:
            probe = loader_for(source)("")
            try:
                probe.construct_document(value_node)
            except (yaml.YAMLError, ValueError, TypeError, OverflowError):
                return int(value_node.start_mark.line) + 2
            finally:
                probe.dispose()
    return 2


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


def simple_front_matter(lines: list[str], end: int) -> dict[str, Field] | None:
    """Front matter read without a YAML parser when every line is simple enough; None to use the parser."""
    fields: dict[str, Field] = {}
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
        fld = Field(None, index + 1, column)
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
        return yaml.load(key, Loader=Loader)
    except yaml.YAMLError:
        return key


def _yaml_hint(lines: list[str], line: int) -> str:
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    if ":" in text and re.search(r":\s*[^\s'\"].*:\s", text):
        return "quote values that contain ': ', e.g. title: \"Caching: phase 1\""
    if "\t" in text:
        return "YAML does not allow tabs for indentation; use spaces"
    return "check the indentation and quoting on this line and the one before"


def read_legacy(lines: list[str], report: Report) -> Meta | None:
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return None
    start = first + 1 if lines[first].startswith("# ") else first
    block_from = _legacy_block_after_intro(lines, start)
    fields: dict[str, Field] = {}
    i, block_start, block_end = block_from if block_from is not None else start, None, start
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
        fields[key] = Field(match["value"], i + 1, match.start("value") + 1)
        i += 1
        block_end = i
    if block_start is None or not any(k in fields for k in ("status", "priority", "estimate", "complexity")):
        return None
    if block_from is not None:  # the intro above the metadata stays where it was
        body_lines = [*lines[:block_start], *lines[block_end:]]
        while 0 < block_start < len(body_lines) and not body_lines[block_start].strip():
            if body_lines[block_start - 1].strip():
                break
            del body_lines[block_start]  # one blank line where the metadata was
    else:
        body_lines = [*lines[:start], *([""] if start > first else []), *lines[block_end:]]
        while start > first and len(body_lines) > start + 1 and not body_lines[start + 1].strip():
            del body_lines[start + 1]  # one blank line between the H1 and the first section
    scan = "\n".join([*lines[:block_start], *([""] * (block_end - block_start)), *lines[block_end:]])
    return Meta(fields, True, "\n".join(body_lines), range(block_start, block_end), 0, scan)


def _legacy_block_after_intro(lines: list[str], start: int) -> int | None:
    """Where the metadata lines start when an intro paragraph sits between the H1 and them, else None.

    Only a line with a known label (`**Status:**`) counts, searched up to the first section; the block
    then reaches back over the metadata lines just above it (`**Owner:**` before `**Status:**`).
    """
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines) or _META_BOLD.match(lines[i]) or _META_PLAIN.match(lines[i]):
        return None
    for j in range(i + 1, len(lines)):
        if lines[j].startswith("## "):
            return None
        match = _META_BOLD.match(lines[j])
        if match and match["key"].strip().lower() in LEGACY_LABELS:
            while j > i and _META_BOLD.match(lines[j - 1]):
                j -= 1
            return j
    return None
