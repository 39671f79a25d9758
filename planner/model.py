"""The plan document model shared by validation, rendering, scheduling and tracking."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from planner.tracking import Tracking

STEPS_SECTION = "Implementation Steps"
# A top-level numbered item (`1. text` or `1) text`); deeper-indented lines continue the item.
_ITEM = re.compile(r"^(?P<number>\d+)[.)][ \t]+(?P<text>.*)$")
_SUB_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])[ \t]")


@dataclass(frozen=True)
class Estimate:
    """A parsed estimate: `2 weeks`, `3-5 days`, `~1 month`, in working days."""

    text: str
    low_days: float
    high_days: float
    approximate: bool = False


@dataclass(frozen=True)
class Section:
    """One `## Heading` of the document body with its text and the 1-based line of the heading."""

    title: str
    body: str
    line: int


@dataclass(frozen=True)
class Step:
    """One numbered item of a plan's `## Implementation Steps`: a criterion of "done" that tests verify.

    Acceptance tests name it with `@pytest.mark.feature("slug", step=number)`.
    """

    number: int
    text: str  # the item's text, continuation lines joined with spaces


@dataclass(frozen=True)
class Plan:
    """One proposal in `plans/`, read from either the canonical or the legacy form.

    Values are kept as written (an unknown status stays as text) so that validation can report them;
    consumers that need valid values should first check `planner.rules` found no errors.
    """

    path: Path
    slug: str
    file_priority: str | None  # from the file name prefix, e.g. "High"; None when the name is malformed
    title: str
    status: str
    priority: str
    complexity: str
    estimate: Estimate | None
    estimate_text: str
    dependencies: tuple[str, ...]
    feature: str  # gateway feature key; defaults to the slug
    owner: str | None
    updated: str | None
    h1: str | None
    sections: tuple[Section, ...]
    body: str  # the Markdown after the front matter (or after the legacy metadata lines)
    legacy: bool  # True when read from the `**Status:** ...` form
    superseded_by: str | None = None  # the slug that replaces a Superseded plan
    extra: dict[str, object] = field(default_factory=dict)  # unknown front-matter keys
    # (line, column) where each metadata key's value is written, for diagnostics about it.
    positions: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False, repr=False)
    # Optional target date, health and review records (planner/tracking.py).
    tracking: Tracking = field(default_factory=Tracking)

    def section(self, title: str) -> Section | None:
        return next((s for s in self.sections if s.title == title), None)

    @property
    def steps(self) -> tuple[Step, ...]:
        """The declared scope: the numbered items of `## Implementation Steps` (empty when there are none)."""
        section = self.section(STEPS_SECTION)
        return parse_steps(section.body) if section is not None else ()


@dataclass(frozen=True)
class Design:
    """A completed feature's decisions in `docs/design/SLUG.md`; dependencies on it stay valid."""

    path: Path
    slug: str
    title: str
    feature: str
    steps: tuple[Step, ...] = ()  # the plan's Implementation Steps, kept on the design page
    priority: str | None = None
    owner: str | None = None
    completed: str | None = None  # the completion date as written (YYYY-MM-DD)


def parse_steps(body: str) -> tuple[Step, ...]:
    """The top-level numbered items of a section body, numbered as Markdown shows them (the first item's
    number, then counting up: `1. 1. 1.` is steps 1, 2, 3).

    Prose before the list and between items is not a step; an indented line continues the item above it;
    a blank line followed by unindented prose ends it. Fenced code is skipped.
    """
    steps: list[Step] = []
    current: list[str] | None = None
    number = 0
    fence = ""
    blank = False
    for line in body.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            fence = marker if not fence else ("" if marker == fence else fence)
            continue
        if fence:
            continue
        match = _ITEM.match(line)
        if match:
            if current is not None:
                steps.append(Step(number, " ".join(current)))
            number = number + 1 if steps or current is not None else int(match["number"])
            current, blank = [match["text"].strip()], False
        elif current is not None and stripped and (line[:1] in " \t" or not blank):
            if not (line[:1] in " \t" and _SUB_ITEM.match(stripped)):
                current.append(stripped)  # a nested list (a design's "verified by") is not the step's text
            blank = False
        elif not stripped:
            blank = True
        elif current is not None:
            steps.append(Step(number, " ".join(current)))
            current = None
    if current is not None:
        steps.append(Step(number, " ".join(current)))
    return tuple(steps)
