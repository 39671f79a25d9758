"""The plan document model shared by validation, rendering, scheduling and tracking."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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

    def section(self, title: str) -> Section | None:
        return next((s for s in self.sections if s.title == title), None)


@dataclass(frozen=True)
class Design:
    """A completed feature's decisions in `docs/design/SLUG.md`; dependencies on it stay valid."""

    path: Path
    slug: str
    title: str
    feature: str
    priority: str | None = None  # from the page's front matter; None on pages written before it was kept
