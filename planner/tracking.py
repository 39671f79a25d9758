"""Optional front matter for accountability and review: a target date, a health signal, review records.

None of these keys is required; each is checked only when present (PL016), so a team adopts them one at a
time. They follow the roadmaps teams already read: Linear's project health (`on track`, `at risk`,
`off track`, with a dated note), a target date the forecast is compared with, and the review metadata of
KEPs and PEPs (the discussion, reviewers, approvers and the date of the decision).

```yaml
target: 2027-01-15            # the forecast ending later shows the plan "at risk"
health: at risk
health_note: waiting for the vendor's quota increase
health_date: 2026-12-01       # when the health was last assessed
discussion: https://github.com/org/repo/discussions/42
reviewers: [ana, bo]
approvers: [cy]
decision_date: 2026-11-30
```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Protocol
from urllib.parse import urlsplit

HEALTH_VALUES = ("on track", "at risk", "off track")
OPTIONAL_KEYS = (
    "target",
    "health",
    "health_note",
    "health_date",
    "discussion",
    "reviewers",
    "approvers",
    "decision_date",
)
_DATE_KEYS = ("target", "health_date", "decision_date")
_LIST_KEYS = ("reviewers", "approvers")

# (code, line, column, message, hint): the parser's problem reporter.
Report = Callable[[str, int | None, int | None, str, str], None]


class _Located(Protocol):  # the parser's Field: a value and where it was written
    @property
    def value(self) -> object: ...
    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...


@dataclass(frozen=True)
class Tracking:
    """A plan's optional accountability and review metadata, validated."""

    target: date | None = None
    health: str | None = None
    health_note: str | None = None
    health_date: date | None = None
    discussion: str | None = None
    reviewers: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    decision_date: date | None = None

    @property
    def reviewed(self) -> bool:
        return bool(self.discussion or self.reviewers or self.approvers or self.decision_date)


def read_tracking(fields: Mapping[str, _Located], report: Report) -> Tracking:
    """The optional keys present in ``fields``, each reported (PL016, naming the key) when malformed."""
    values: dict[str, object] = {}
    for key in _DATE_KEYS:
        if key in fields:
            values[key] = _date(key, fields[key], report)
    if "health" in fields:
        fld = fields["health"]
        text = str(fld.value).strip().lower() if isinstance(fld.value, str) else None
        if text in HEALTH_VALUES:
            values["health"] = text
        else:
            allowed = ", ".join(HEALTH_VALUES)
            message = f"health {fld.value!r} is not one of {allowed}"
            report("PL016", fld.line, fld.column, message, "say how the plan is doing: `health: at risk`")
    for key in ("health_note", "discussion"):
        if key in fields:
            fld = fields[key]
            if isinstance(fld.value, str) and fld.value.strip():
                values[key] = fld.value.strip()
            else:
                report(
                    "PL016", fld.line, fld.column, f"{key} must be text", f"write `{key}: ...` as one line"
                )
    if "discussion" in values and not _is_url(str(values["discussion"])):
        fld = fields["discussion"]
        report("PL016", fld.line, fld.column, f"discussion {values.pop('discussion')!r} is not a link",
               "give the http(s) address of the issue, pull request or thread")  # fmt: skip
    for key in _LIST_KEYS:
        if key in fields:
            fld = fields[key]
            items = fld.value if isinstance(fld.value, list) else None
            if items is not None and all(isinstance(i, str) and i.strip() for i in items):
                values[key] = tuple(i.strip() for i in items)
            else:
                report("PL016", fld.line, fld.column, f"{key} must be a list of names",
                       f"write `{key}: [ana, bo]`")  # fmt: skip
    if "health_note" in values and "health" not in fields:
        fld = fields["health_note"]
        report("PL016", fld.line, fld.column, "health_note without health",
               "add `health: on track`, `at risk` or `off track`")  # fmt: skip
    return Tracking(**values)  # type: ignore[arg-type]


def _date(key: str, fld: _Located, report: Report) -> date | None:
    # YAML reads an unquoted 2027-01-15 as a date already; a quoted one is text.
    if isinstance(fld.value, date):
        return fld.value
    if isinstance(fld.value, str):
        try:
            return date.fromisoformat(fld.value.strip())
        except ValueError:
            pass
    report("PL016", fld.line, fld.column, f"{key} {fld.value!r} is not a date", f"write `{key}: YYYY-MM-DD`")
    return None


def _is_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
