"""Mermaid sources for the dependency graph and the timeline.

Labels are written as data, never as syntax: quotes and the characters mermaid treats as separators are
replaced, so a plan titled `Caching: phase 1; "v2"` cannot break the diagram.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from planner.forecast import Dates
from planner.model import Design, Plan
from planner.schedule import Slot, working_day

from .roadmap import Roadmap

# Status → (fill, stroke, text colour); readable in the light and the dark scheme.
STATUS_COLOURS = {
    "Proposed": ("#eceff1", "#78909c", "#263238"),
    "Planned": ("#e3f2fd", "#1e88e5", "#0d2c54"),
    "In Progress": ("#fff3e0", "#fb8c00", "#4e2a00"),
    "Completed": ("#e8f5e9", "#43a047", "#1b3d1f"),
}
OTHER_COLOURS = ("#fce4ec", "#d81b60", "#4a0b22")
# A Completed feature whose acceptance tests fail: red, with a thick border, whatever the scheme.
REGRESSION_COLOURS = ("#ffcdd2", "#c62828", "#3b0000")

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_]")


def css_name(text: str) -> str:
    """`In Progress` → `in-progress`: a status or priority as a CSS class or mermaid class suffix."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "none"


def mermaid_class(text: str) -> str:
    """A status as a mermaid class name (letters, digits and underscores only)."""
    return css_name(text).replace("-", "_")


def node_id(prefix: str, slug: str) -> str:
    return prefix + _UNSAFE_ID.sub("_", slug)


def label(text: str) -> str:
    """Text safe inside a quoted mermaid label."""
    return text.replace('"', "#quot;").replace("\n", " ")


def gantt_label(text: str) -> str:
    """Text safe as a gantt task name, where `:` `;` and `#` are syntax."""
    return re.sub(r"[:;#]", " ", text).replace("\n", " ").strip() or "untitled"


def dependency_graph(roadmap: Roadmap, link: Callable[[str], str]) -> str:
    """A left-to-right flowchart: prerequisites point to the plans that need them, nodes coloured by status.

    `link(slug)` gives the address of a plan's or design's page for the node's `click`.
    """
    lines = ["flowchart LR"]
    known: dict[str, str] = {}  # slug → mermaid class
    regressed = set(roadmap.regressions)
    for design in roadmap.designs:
        known[design.slug] = "regression" if design.slug in regressed else "completed"
        lines.append(f'    {node_id("n_", design.slug)}["{label(design.title)}"]:::{known[design.slug]}')
    for plan in roadmap.plans:
        known[plan.slug] = "regression" if plan.slug in regressed else mermaid_class(plan.status)
        lines.append(f'    {node_id("n_", plan.slug)}["{label(plan.title)}"]:::{known[plan.slug]}')
    missing = sorted({d for p in roadmap.plans for d in p.dependencies} - set(known))
    for slug in missing:
        lines.append(f'    {node_id("n_", slug)}["{label(slug)} (unknown)"]:::unknown')
    for plan in roadmap.plans:
        for dep in plan.dependencies:
            lines.append(f"    {node_id('n_', dep)} --> {node_id('n_', plan.slug)}")
    for slug in sorted(known):
        lines.append(f'    click {node_id("n_", slug)} href "{link(slug)}" "Open {label(slug)}"')
    for status, (fill, stroke, colour) in STATUS_COLOURS.items():
        lines.append(f"    classDef {mermaid_class(status)} fill:{fill},stroke:{stroke},color:{colour}")
    if regressed:
        fill, stroke, colour = REGRESSION_COLOURS
        lines.append(f"    classDef regression fill:{fill},stroke:{stroke},color:{colour},stroke-width:3px")
    used = set(known.values()) - {mermaid_class(s) for s in STATUS_COLOURS} - {"regression"}
    for name in sorted(used | ({"unknown"} if missing else set())):
        fill, stroke, colour = OTHER_COLOURS
        lines.append(f"    classDef {name} fill:{fill},stroke:{stroke},color:{colour},stroke-dasharray:4 3")
    return "\n".join(lines)


def gantt(
    roadmap: Roadmap, slots: Sequence[Slot], dates: Mapping[str, Dates], link: Callable[[str], str]
) -> str:
    """A mermaid gantt chart with one section per lane and one for the baselines; completed work is left out.

    In Progress work is `active`, work forecast to end after its baseline or its target date is `crit` (red),
    each baseline a `done` (grey) bar; the today marker is drawn at the reader's date, so a site built long
    ago shows it.
    """
    lines = [
        "gantt",
        "    dateFormat YYYY-MM-DD",
        "    axisFormat %d %b",
        "    todayMarker stroke-width:3px,stroke:#d32f2f,opacity:0.9",
    ]
    lanes = sorted({s.lane for s in slots if s.lane is not None})
    for lane in lanes:
        lines.append(f"    section Lane {lane}")
        for slot in (s for s in slots if s.lane == lane):
            tags = []
            if slot.status == "In Progress":
                tags.append("active")
            when = dates.get(slot.slug)
            plan = roadmap.plans_by_slug.get(slot.slug)
            target = plan.tracking.target if plan is not None else None
            if when is not None and ((when.slip or 0) > 0 or (target is not None and when.end > target)):
                tags.append("crit")
            start = working_day(roadmap.today, slot.start)
            if slot.days:
                # Mermaid's end date is exclusive: the task ends when the next working day begins.
                end = working_day(roadmap.today, slot.end).isoformat()
            else:
                tags.append("milestone")
                end = "0d"
            parts = [*tags, node_id("t_", slot.slug), start.isoformat(), end]
            lines.append(f"    {gantt_label(slot.title)} :{', '.join(parts)}")
    planned = [
        (s, dates[s.slug]) for s in slots if s.slug in dates and dates[s.slug].baseline_end is not None
    ]
    if planned:
        lines.append("    section Baseline")
        for slot, when in planned:
            assert when.baseline_start is not None and when.baseline_end is not None
            end = working_day(when.baseline_end, 1).isoformat()
            parts = ["done", node_id("b_", slot.slug), when.baseline_start.isoformat(), end]
            lines.append(f"    {gantt_label(slot.title)} (baseline) :{', '.join(parts)}")
    for lane in lanes:
        for slot in (s for s in slots if s.lane == lane):
            lines.append(f'    click {node_id("t_", slot.slug)} href "{link(slot.slug)}"')
    return "\n".join(lines)


def plan_or_design_title(slug: str, plans: dict[str, Plan], designs: dict[str, Design]) -> str:
    item = plans.get(slug) or designs.get(slug)
    return item.title if item is not None else slug
