"""Diagnostics: one `Problem` per finding, rendered as text, JSON or GitHub Actions annotations."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding about one file; `line` and `column` are 1-based and None when unknown."""

    path: Path
    line: int | None
    column: int | None
    code: str
    severity: Severity
    message: str
    hint: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def location(self, base: Path | None = None) -> str:
        """`path:line:col` with the parts that are known; the path relative to `base` when inside it."""
        text = display_path(self.path, base)
        if self.line is not None:
            text += f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        return text


def display_path(path: Path, base: Path | None = None) -> str:
    """`path` relative to `base` (default: the cwd) when it lies inside it, else as given."""
    base = base or Path.cwd()
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def sort_key(problem: Problem) -> tuple[str, int, int, str]:
    return (str(problem.path), problem.line or 0, problem.column or 0, problem.code)


def format_text(problem: Problem, base: Path | None = None) -> str:
    """`path:line:col: severity CODE message`, then the fix hint indented on the next line."""
    text = f"{problem.location(base)}: {problem.severity} {problem.code} {problem.message}"
    if problem.hint:
        text += f"\n    hint: {problem.hint}"
    return text


def format_github(problem: Problem, base: Path | None = None) -> str:
    """A GitHub Actions workflow command, so the problem shows as an annotation on the pull request."""
    params = [f"file={_escape_property(display_path(problem.path, base))}"]
    if problem.line is not None:
        params.append(f"line={problem.line}")
        if problem.column is not None:
            params.append(f"col={problem.column}")
    params.append(f"title={_escape_property(problem.code)}")
    message = problem.message + (f" (hint: {problem.hint})" if problem.hint else "")
    return f"::{problem.severity} {','.join(params)}::{_escape_data(message)}"


def to_json(problems: Sequence[Problem], files: int, base: Path | None = None) -> str:
    """The `--format json` document: every problem, and a summary with counts."""
    items = []
    for problem in problems:
        item = asdict(problem)
        item["path"] = display_path(problem.path, base)
        items.append(item)
    summary = {
        "files": files,
        "errors": sum(p.is_error for p in problems),
        "warnings": sum(not p.is_error for p in problems),
    }
    return json.dumps({"problems": items, "summary": summary}, indent=2)


def count(problems: Iterable[Problem]) -> tuple[int, int]:
    """(errors, warnings)."""
    errors = warnings = 0
    for problem in problems:
        if problem.is_error:
            errors += 1
        else:
            warnings += 1
    return errors, warnings


def _escape_data(text: str) -> str:
    # The escaping GitHub's toolkit applies to workflow command data.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


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
