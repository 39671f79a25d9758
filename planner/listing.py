"""Plans and completed designs as records for `planner list` and `planner show`: JSON-ready dicts, CSV rows
and text tables. A completed feature (a page in docs/design/) is listed with the configured completed status,
so closed work stays in view after `planner complete` moved it out of plans/."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planner.config import PlannerConfig
from planner.model import Design, Plan

Entry = Plan | Design

CSV_COLUMNS = (
    "slug",
    "title",
    "status",
    "priority",
    "complexity",
    "estimate",
    "low_days",
    "high_days",
    "dependencies",
    "path",
)


def relative(path: Path, config: PlannerConfig) -> str:
    try:
        return path.resolve().relative_to(config.root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def status_of(entry: Entry, config: PlannerConfig) -> str:
    return entry.status if isinstance(entry, Plan) else config.completed_status


def priority_of(entry: Entry) -> str:
    """A design written before pages kept their priority has none: shown as `-`."""
    return entry.priority or "-"


def record(entry: Entry, config: PlannerConfig) -> dict[str, Any]:
    """What `planner list --format json` says about one plan or completed design."""
    if isinstance(entry, Design):
        return {
            "slug": entry.slug,
            "title": entry.title,
            "status": config.completed_status,
            "priority": entry.priority,
            "complexity": None,
            "estimate": "",
            "working_days": None,
            "dependencies": [],
            "feature": entry.feature,
            "owner": entry.owner,
            "path": relative(entry.path, config),
        }
    plan = entry
    days = (
        {
            "low": plan.estimate.low_days,
            "high": plan.estimate.high_days,
            "approximate": plan.estimate.approximate,
        }
        if plan.estimate
        else None
    )
    data = {
        "slug": plan.slug,
        "title": plan.title,
        "status": plan.status,
        "priority": plan.priority,
        "complexity": plan.complexity,
        "estimate": plan.estimate_text,
        "working_days": days,
        "dependencies": list(plan.dependencies),
        "feature": plan.feature,
        "owner": plan.owner,
        "path": relative(plan.path, config),
    }
    if plan.tracking.health:
        data["health"] = plan.tracking.health
    if plan.tracking.target:
        data["target"] = plan.tracking.target.isoformat()
    if plan.superseded_by:
        data["superseded_by"] = plan.superseded_by
    return data


def sort_plans(entries: Sequence[Entry], config: PlannerConfig) -> list[Entry]:
    """By priority (as configured), then slug."""
    rank = {priority: index for index, priority in enumerate(config.priorities)}
    return sorted(entries, key=lambda p: (rank.get(p.priority or "", len(rank)), p.slug))


def to_csv(plans: Sequence[Entry], config: PlannerConfig) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for plan in plans:
        rec = record(plan, config)
        days = rec["working_days"] or {}
        writer.writerow(
            [
                rec["slug"],
                rec["title"],
                rec["status"],
                rec["priority"] or "",
                rec["complexity"] or "",
                rec["estimate"],
                _number(days.get("low")),
                _number(days.get("high")),
                " ".join(rec["dependencies"]),
                rec["path"],
            ]
        )
    return out.getvalue()


def to_table(entries: Sequence[Entry], config: PlannerConfig) -> list[list[str]]:
    """Header and rows for the text table."""
    rows = [["SLUG", "PRIORITY", "STATUS", "OWNER", "COMPLEXITY", "ESTIMATE", "DEPENDS ON"]]
    for entry in entries:
        if isinstance(entry, Design):
            owner = entry.owner or "-"
            rows.append(
                [entry.slug, priority_of(entry), config.completed_status, owner, "-", "design page", "-"]
            )
            continue
        deps = ", ".join(entry.dependencies) or "-"
        status = entry.status + (f" by {entry.superseded_by}" if entry.superseded_by else "")
        if entry.tracking.health:
            status += f" ({entry.tracking.health})"
        row = [entry.slug, entry.priority, status, entry.owner or "-", entry.complexity]
        rows.append([*row, entry.estimate_text or "-", deps])
    return rows


def align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
