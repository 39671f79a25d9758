"""Changing plans on disk: atomic writes, one-line field edits, and renames that keep git history."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import subprocess
import tempfile
from pathlib import Path

import yaml

from planner.config import SUPERSEDED, PlannerConfig
from planner.model import Plan
from planner.parse import (
    FILE_NAME,
    LEGACY_LABELS,
    SLUG,
    load_designs,
    parse_plan,
    priority_prefixes,
    slug_from_name,
    suggest,
)
from planner.problems import display_path
from planner.rules import plan_files


class EditError(Exception):
    """An edit that cannot be made; the message says why and what to do instead."""


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename.

    Readers see the old file or the new one, never half of it; an existing file keeps its permissions.
    Newlines are written exactly as they are in `text`.
    """
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def read_exact(path: Path) -> str:
    """The file's text with its newlines untouched, so an edit can keep every other byte."""
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def find_plan(config: PlannerConfig, name: str) -> Path:
    """The plan file for a slug (`response-caching`), a file name (`HIGH-response-caching.md`) or a path."""
    candidate = Path(name)
    if candidate.suffix == ".md" and candidate.is_file():
        return candidate
    files = plan_files(config.plans_path)
    wanted = name.removesuffix(".md")
    match = FILE_NAME.match(wanted + ".md")
    if match and match["prefix"] in priority_prefixes(config):
        wanted = match["slug"]
    found = [path for path in files if slug_from_name(path, config)[0] == wanted]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise EditError(f"slug {wanted!r} is used by {names}; run `planner validate` and keep one")
    design = next((d for d in load_designs(config) if d.slug == wanted), None)
    if design is not None:
        raise EditError(
            f"{wanted!r} is completed: no longer a plan, its decisions are in {display_path(design.path)}"
        )
    slugs = sorted({slug_from_name(path, config)[0] for path in files})
    guess = suggest(wanted, slugs)
    hint = f"; did you mean {guess!r}?" if guess else ("; `planner list` shows them" if slugs else "")
    raise EditError(f"no plan {wanted!r} in {config.plans_dir}/{hint}")


def load_plan(config: PlannerConfig, path: Path) -> tuple[Plan, str]:
    """The plan and its exact text; a plan whose metadata cannot be read is an EditError."""
    where = display_path(path)
    try:
        text = read_exact(path)
    except UnicodeDecodeError as exc:
        # A ValueError too: left alone, the command would blame its STATUS or PRIORITY argument.
        raise EditError(f"cannot read {where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise EditError(f"cannot read {where}: {exc.strerror}") from exc
    plan, problems = parse_plan(path, text, config)
    if plan is None:
        first = problems[0]
        raise EditError(f"cannot read {where}: {first.message} (run `planner validate {where}`)")
    return plan, text


_FRONT_VALUE = r"^(?P<head>{key}[ \t]*:[ \t]*)(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^#\r\n]*?)(?P<tail>[ \t]+#[^\r\n]*)?(?P<eol>\r?\n|\r)?$"  # noqa: E501


def set_field(text: str, key: str, value: str, *, literal: bool = False) -> str:
    """`text` with the metadata line for `key` holding `value`; every other byte unchanged.

    Works on front matter (`status: Planned  # comment` keeps its comment) and on legacy lines
    (`**Status:** Planned`). Raises EditError when the file has no such line. With `literal`, the value
    is written as given rather than as a YAML string (a date stays a date: `updated: 2026-12-04`).
    """
    lines = text.splitlines(keepends=True)
    if lines and lines[0].rstrip("\r\n").rstrip() == "---":
        pattern = re.compile(_FRONT_VALUE.format(key=re.escape(key)))
        scalar = value if literal else _yaml_scalar(value)
        for index in range(1, len(lines)):
            if re.match(r"^(---|\.\.\.)\s*$", lines[index]):
                break
            match = pattern.match(lines[index])
            if match:
                lines[index] = f"{match['head']}{scalar}{match['tail'] or ''}{match['eol'] or ''}"
                return "".join(lines)
        raise EditError(f"the front matter has no `{key}:` line; add one (see `planner validate`)")
    labels = [label for label, canonical in LEGACY_LABELS.items() if canonical == key]
    legacy = re.compile(
        r"^(?P<head>(?:[-*+]\s+)?(?:\*\*)?(?:"
        + "|".join(re.escape(lb) for lb in labels)
        + r")(?::\*\*|\*\*\s*:|:)"
        r"[ \t]*)(?P<value>.*?)(?P<tail>[ \t]*)(?P<eol>\r?\n|\r)?$",
        re.IGNORECASE,
    )
    for index, line in enumerate(lines):
        match = legacy.match(line)
        if match:
            lines[index] = f"{match['head']}{value}{match['tail']}{match['eol'] or ''}"
            return "".join(lines)
    raise EditError(f"the file has no {key} line; add one (see `planner validate`)")


def touch_updated(text: str, today: dt.date | None = None) -> str:
    """`text` with `updated:` set to today (every command that edits a plan calls this).

    An `updated:` line is rewritten in place; front matter without one gets it as its last line; a
    legacy plan gets it only when it has a `**Last Updated:**` line, since it has no front matter to add
    a field to. Every other byte is unchanged.
    """
    stamp = (today or dt.date.today()).isoformat()
    try:
        return set_field(text, "updated", stamp, literal=True)
    except EditError:
        pass
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").rstrip() != "---":
        return text
    end = next((i for i in range(1, len(lines)) if re.match(r"^(---|\.\.\.)\s*$", lines[i])), None)
    if end is None:
        return text
    eol = "\r\n" if lines[0].endswith("\r\n") else "\n"
    lines.insert(end, f"updated: {stamp}{eol}")
    return "".join(lines)


def _checked(config: PlannerConfig, path: Path, text: str, key: str, value: str) -> str:
    """`text` once it is certain the edit reads back as intended (a multi-line YAML value would not)."""
    plan, _ = parse_plan(path, text, config)
    if plan is None or getattr(plan, key) != value:
        raise EditError(f"cannot safely edit the {key} line of {path.name}; write `{key}: {value}` by hand")
    return text


def _yaml_scalar(value: str) -> str:
    dumped = yaml.safe_dump(value, allow_unicode=True, width=10**6)
    return dumped.removesuffix("\n").removesuffix("\n...").strip()


def change_status(
    config: PlannerConfig,
    name: str,
    new_status: str,
    *,
    force: bool = False,
    superseded_by: str | None = None,
    today: dt.date | None = None,
) -> tuple[Path, str, str]:
    """Move a plan's status: forward one step or back any number; skipping forward needs `force`.
    Closing a plan (Rejected, Withdrawn, Deferred, Superseded) or reopening it is allowed from any state;
    Superseded needs its successor (`superseded_by`, a plan or completed design), written in the same edit.

    The completed status is never set here: it is earned through `planner complete`, which checks
    the feature's acceptance tests. `updated:` becomes `today` (default: the date today). Returns (path,
    old status, new status).
    """
    statuses = list(config.all_statuses)
    if new_status not in statuses:
        guess = suggest(new_status, statuses)
        if guess is None:
            raise ValueError(f"unknown status {new_status!r}; use one of: {', '.join(statuses)}")
        if guess.lower() != new_status.lower():
            raise ValueError(f"unknown status {new_status!r}; did you mean {guess!r}?")
        new_status = guess
    path = find_plan(config, name)
    plan, text = load_plan(config, path)
    if new_status == config.completed_status:
        raise EditError(
            f"{new_status} is earned, not set: run `planner complete {plan.slug}` on the In Progress "
            f"plan; it runs the feature's acceptance tests, and only when every Implementation Step is "
            f"verified and no test fails it writes {config.design_dir}/{plan.slug}.md (steps, priority, "
            f"owner, date, commit) and removes the plan"
        )
    old = plan.status
    if old == new_status:
        return path, old, new_status
    lifecycle = list(config.lifecycle)  # closing a plan (Rejected, ...) or reopening it is not a step
    if old in lifecycle and new_status in lifecycle:
        statuses = lifecycle
        step = statuses.index(new_status) - statuses.index(old)
        if step > 1 and not force:
            following = statuses[statuses.index(old) + 1]
            skipped = ", ".join(statuses[statuses.index(old) + 1 : statuses.index(new_status)])
            raise EditError(
                f"{old} -> {new_status} skips {skipped}; "
                f"move one step (`planner status {plan.slug} {following}`) or pass --force"
            )
    edited = _checked(config, path, set_field(text, "status", new_status), "status", new_status)
    if new_status == SUPERSEDED:
        edited = _with_successor(config, path, plan, edited, superseded_by)
    write_atomic(path, _checked_touch(config, path, edited, today))
    return path, old, new_status


def _checked_touch(config: PlannerConfig, path: Path, text: str, today: dt.date | None) -> str:
    """`text` with `updated:` set to today, once it is certain the date reads back (else left as it was)."""
    touched = touch_updated(text, today)
    plan, _ = parse_plan(path, touched, config)
    stamp = (today or dt.date.today()).isoformat()
    return touched if plan is not None and plan.updated == stamp else text


def _with_successor(config: PlannerConfig, path: Path, plan: Plan, text: str, successor: str | None) -> str:
    """`text` naming `successor` in `superseded_by:`, so a Superseded plan never lands without it (PL071)."""
    if successor is None:
        if plan.superseded_by:
            return text
        raise EditError(f"a {SUPERSEDED} plan names what replaces it: pass --by SLUG")
    known = {slug_from_name(p, config)[0] for p in plan_files(config.plans_path)}
    known |= {p.stem for p in config.design_path.glob("*.md")}
    if successor not in known - {plan.slug}:
        raise EditError(f"--by {successor}: no other plan or completed design has that slug")
    if plan.superseded_by is not None:
        return _checked(config, path, set_field(text, "superseded_by", successor), "superseded_by", successor)
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").rstrip() != "---":
        raise EditError(f"{path.name} has no front matter: add `superseded_by: {successor}` by hand")
    status_line = next(i for i, line in enumerate(lines) if re.match(r"^status\s*:", line))
    eol = "\r\n" if lines[status_line].endswith("\r\n") else "\n"
    lines.insert(status_line + 1, f"superseded_by: {successor}{eol}")
    return _checked(config, path, "".join(lines), "superseded_by", successor)


def change_priority(
    config: PlannerConfig, name: str, level: str, *, today: dt.date | None = None
) -> tuple[Path, Path]:
    """Set a plan's priority and rename its file to match (with `git mv` inside a git work tree);
    `updated:` becomes `today` when the priority changes.

    Returns (old path, new path).
    """
    priorities = list(config.priorities)
    wanted = suggest(level, priorities)
    if wanted is None or wanted.lower() != level.lower():
        hint = f"did you mean {wanted!r}?" if wanted else f"use one of: {', '.join(priorities)}"
        raise ValueError(f"unknown priority {level!r}; {hint}")
    path = find_plan(config, name)
    plan, text = load_plan(config, path)
    if not SLUG.match(plan.slug):
        raise EditError(f"{path.name} is not named PRIORITY-slug.md; rename it first")
    target = path.with_name(f"{wanted.upper()}-{plan.slug}.md")
    new_text = text
    if plan.priority != wanted:
        new_text = _checked(config, path, set_field(text, "priority", wanted), "priority", wanted)
    if new_text != text or target != path:
        new_text = _checked_touch(config, path, new_text, today)
    if target == path:
        if new_text != text:
            write_atomic(path, new_text)
        return path, path
    if target.exists():
        raise EditError(f"{target} already exists; merge the two plans first")
    if new_text != text:
        write_atomic(path, new_text)
    move(path, target)
    return path, target


def move(source: Path, target: Path) -> None:
    """Rename with `git mv` when the file is tracked in a git work tree (history follows), else plainly."""
    if _tracked(source):
        result = subprocess.run(
            ["git", "mv", source.name, target.name],
            cwd=source.parent,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            return
    os.replace(source, target)


def _tracked(path: Path) -> bool:
    try:
        result = subprocess.run(
            ["git", "ls-files", "--error-unmatch", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:  # git is not installed
        return False
    return result.returncode == 0
