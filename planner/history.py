"""When each plan entered each status, read from git: the timeline's real starts and baselines, the feed.

One `git log` over the plans and design folders, oldest first, with zero-context diffs: a commit that adds a
`status:` line (front matter) or a `**Status:**` line (the legacy form) to a plan's file moved that plan to
that status on the commit's date. A plan moved to `docs/design/` by `planner complete` keeps its slug (the
design page's file name), so its history continues there. Outside a git repository, or without git, the
history is empty and every consumer falls back to today-based dates.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePosixPath

from planner.config import PlannerConfig
from planner.parse import slug_from_name

_RECORD = "\x1e"
_FIELD = "\x1f"
_STATUS_LINE = re.compile(
    r"^\+(?:status:\s*(?P<yaml>.+?)|(?:[-*+]\s+)?\*\*Status:?\*\*:?\s*(?P<legacy>.+?))\s*$"
)
_DIFF_HEADER = re.compile(r"^diff --git a/.+ b/(?P<path>.+)$")
GIT_SECONDS = 30  # a very long history on a slow disk; beyond it the site is built without history


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One plan entering one status (the first line of its history is its creation)."""

    slug: str
    status: str
    when: datetime  # the commit's committer date, with its offset
    commit: str
    subject: str  # the commit's subject line: what the author said about the change
    previous: str | None  # the status it left; None when the plan first appeared


@dataclass(frozen=True)
class History:
    """Every recorded status change, oldest first, and lookups over them."""

    changes: tuple[StatusChange, ...] = ()

    def of(self, slug: str) -> list[StatusChange]:
        return [c for c in self.changes if c.slug == slug]

    def entered(self, slug: str, status: str) -> date | None:
        """The first day ``slug`` entered ``status``, or None (never, or no history)."""
        return next((c.when.date() for c in self.changes if c.slug == slug and c.status == status), None)

    def last_entered(self, slug: str, status: str, until: date | None = None) -> date | None:
        """The last day (up to ``until``) ``slug`` entered ``status``: it may have left and come back."""
        found = [
            c.when.date()
            for c in self.changes
            if c.slug == slug and c.status == status and (until is None or c.when.date() <= until)
        ]
        return found[-1] if found else None

    def newest_first(self, limit: int | None = None) -> list[StatusChange]:
        ordered = sorted(self.changes, key=lambda c: c.when, reverse=True)
        return ordered if limit is None else ordered[:limit]


def read_history(config: PlannerConfig) -> History:
    """The status history of ``config``'s plans and designs; empty outside a git repository."""
    folders = [config.plans_dir, config.design_dir]
    try:
        result = subprocess.run(
            [
                "git",
                "-C",
                str(config.root),
                "log",
                "--reverse",
                "-M",
                "--unified=0",
                "--no-color",
                "--no-ext-diff",
                f"--format={_RECORD}%H{_FIELD}%cI{_FIELD}%s",
                "-p",
                "--",
                *folders,
            ],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=GIT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return History()
    if result.returncode != 0:
        return History()
    return History(tuple(parse_log(result.stdout, config)))


def parse_log(text: str, config: PlannerConfig) -> Iterable[StatusChange]:
    """Status changes from ``git log -p`` output in the format :func:`read_history` asks for."""
    current: dict[str, str] = {}
    plans = PurePosixPath(config.plans_dir)
    designs = PurePosixPath(config.design_dir)
    for record in text.split(_RECORD)[1:]:
        header, _, diff = record.partition("\n")
        commit, when_text, subject = [*header.split(_FIELD), "", "", ""][:3]
        try:
            when = datetime.fromisoformat(when_text)
        except ValueError:
            continue
        slug: str | None = None
        for line in diff.split("\n"):
            match = _DIFF_HEADER.match(line)
            if match:
                slug = _slug_of(PurePosixPath(match["path"]), plans, designs, config)
                continue
            if slug is None or not line.startswith("+") or line.startswith("+++"):
                continue
            status_match = _STATUS_LINE.match(line)
            if status_match is None:
                continue
            status = (status_match["yaml"] or status_match["legacy"] or "").strip().strip("'\"")
            if not status or current.get(slug) == status:
                continue
            yield StatusChange(slug, status, when, commit, subject, current.get(slug))
            current[slug] = status
            slug = None  # one status line per file per commit (a body line quoting one is not a change)


def _slug_of(
    path: PurePosixPath, plans: PurePosixPath, designs: PurePosixPath, config: PlannerConfig
) -> str | None:
    if path.suffix != ".md" or path.name.startswith(("_", ".")) or path.name.lower() == "readme.md":
        return None
    if path.parent == plans:
        return slug_from_name(Path(path.name), config)[0]
    if path.parent == designs and path.name != "index.md":
        return path.stem.lower()
    return None
