"""Plans as records for `planner list` and `planner show`: JSON-ready dicts, CSV rows and text tables."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planner.config import PlannerConfig
from planner.model import Plan

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


def record(plan: Plan, config: PlannerConfig) -> dict[str, Any]:
    """What `planner list --format json` says about one plan."""
    days = (
        {
            "low": plan.estimate.low_days,
            "high": plan.estimate.high_days,
            "approximate": plan.estimate.approximate,
        }
        if plan.estimate
        else None
    )
    return {
        "slug": plan.slug,
        "title": plan.title,
        "status": plan.status,
        "priority": plan.priority,
        "complexity": plan.complexity,
        "estimate": plan.estimate_text,
        "working_days": days,
        "dependencies": list(plan.dependencies),
        "feature": plan.feature,
        "path": relative(plan.path, config),
    }


def sort_plans(plans: Sequence[Plan], config: PlannerConfig) -> list[Plan]:
    """By priority (as configured), then slug."""
    rank = {priority: index for index, priority in enumerate(config.priorities)}
    return sorted(plans, key=lambda p: (rank.get(p.priority, len(rank)), p.slug))


def to_csv(plans: Sequence[Plan], config: PlannerConfig) -> str:
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
                rec["priority"],
                rec["complexity"],
                rec["estimate"],
                _number(days.get("low")),
                _number(days.get("high")),
                " ".join(rec["dependencies"]),
                rec["path"],
            ]
        )
    return out.getvalue()


def to_table(plans: Sequence[Plan]) -> list[list[str]]:
    """Header and rows for the text table."""
    rows = [["SLUG", "PRIORITY", "STATUS", "COMPLEXITY", "ESTIMATE", "DEPENDS ON"]]
    for plan in plans:
        deps = ", ".join(plan.dependencies) or "-"
        rows.append([plan.slug, plan.priority, plan.status, plan.complexity, plan.estimate_text or "-", deps])
    return rows


def align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
