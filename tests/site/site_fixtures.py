"""Plan and design objects built directly, so site tests do not depend on the parser's details."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from planner.model import Design, Estimate, Plan, Section

REPO = Path(__file__).resolve().parents[2]
UNITS = {"day": 1.0, "days": 1.0, "week": 5.0, "weeks": 5.0}


def estimate(text: str) -> Estimate:
    number, unit = text.split()
    low, _, high = number.partition("-")
    return Estimate(text, float(low) * UNITS[unit], float(high or low) * UNITS[unit])


def make_plan(
    slug: str,
    *,
    priority: str = "High",
    status: str = "Proposed",
    estimate_text: str | None = "1 week",
    dependencies: tuple[str, ...] = (),
    title: str | None = None,
    root: Path = Path("/project"),
    body: str | None = None,
    owner: str | None = "gateway-team",
) -> Plan:
    title = title or slug.replace("-", " ").title()
    body = (
        body
        if body is not None
        else f"# {title}\n\n## Goal\n\nMake {slug} work.\n\n## Design Proposal\n\nA stage.\n"
    )
    return Plan(
        path=root / "plans" / f"{priority.upper()}-{slug}.md",
        slug=slug,
        file_priority=priority,
        title=title,
        status=status,
        priority=priority,
        complexity="Moderate",
        estimate=estimate(estimate_text) if estimate_text else None,
        estimate_text=estimate_text or "",
        dependencies=dependencies,
        feature=slug,
        owner=owner,
        updated="2026-11-20",
        h1=title,
        sections=(Section("Goal", f"Make {slug} work.", 3), Section("Design Proposal", "A stage.", 7)),
        body=body,
        legacy=False,
    )


def make_design(slug: str, root: Path = Path("/project")) -> Design:
    return Design(path=root / "docs" / "design" / f"{slug}.md", slug=slug, title=slug.title(), feature=slug)


def mkdocs_build(root: Path, site: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`mkdocs build` of the project at `root` into `site`, as a user would run it."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    cmd = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--config-file",
        str(root / "mkdocs.yml"),
        "-d",
        str(site),
    ]
    return subprocess.run(
        [*cmd, *extra], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
