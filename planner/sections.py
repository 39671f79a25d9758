"""The body of a plan: its `# Title`, its `## Sections`, and the template rules they must follow."""

from __future__ import annotations

import re
from pathlib import Path

from planner.config import PlannerConfig
from planner.metadata import Meta, Report
from planner.model import Section
from planner.problems import suggest

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
BRACKETED = re.compile(r"^\[[^\[\]]+\]$")
# What an author writes for "not yet": a section holding nothing else is unwritten (PL045). HTML comments are
# invisible on the site, so a section holding only `<!-- explain here -->` reads as empty there too.
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_FILLER_LINE = re.compile(
    r"^(?:(?:[-*+]|\d+[.)])[ \t]+)?(?:(?:TODO|TBD|FIXME|XXX)\b.*|[-?.…—–_]+|\[ \])$", re.IGNORECASE
)
# The sections' own to-do codes: while a plan is a draft (the first status) they are warnings.
UNFILLED = frozenset({"PL042", "PL043", "PL045"})


def filler(body: str) -> str | None:
    """The to-do text a section holds instead of content (`TODO`, `TBD`, `...`, `-`, `?`, only an HTML
    comment), or None when it holds anything else."""
    visible = _COMMENT.sub("", body)
    lines = [line.strip() for line in visible.splitlines() if line.strip()]
    if not lines:
        return "only an HTML comment" if body.strip() else None
    if all(_FILLER_LINE.match(line) for line in lines):
        shown = " ".join(lines)
        return repr(shown if len(shown) <= 40 else shown[:37] + "...")
    return None


def scan_body(meta: Meta) -> tuple[tuple[str, int] | None, list[Section], list[tuple[int, str]]]:
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


def check_sections(
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
            continue
        todo = filler(section.body) if len(section.body) < 400 else None  # content is long; to-dos short
        if todo:
            report(
                "PL045",
                section.line,
                1,
                f"section {section.title!r} holds only {todo}: it is not written yet",
                "write it, or say why it does not apply (`--strict` fails on this, as on an empty section)",
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
