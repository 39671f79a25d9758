"""Builders for plan documents in a temporary project."""

from __future__ import annotations

from pathlib import Path

SECTIONS = {
    "Goal": "Serve repeated prompts from a cache.",
    "User Benefit": "Lower cost and latency for repeated requests.",
    "Design Proposal": "Key on the tenant, model and normalised messages.",
    "Implementation Steps": "1. Add the cache stage.\n2. Add the Redis backend.",
    "Open Questions": "- How long should entries live?",
    "Alternatives Considered": "An HTTP cache in front: it cannot see the tenant.",
}


def plan_text(
    title: str = "Response Caching",
    *,
    status: str = "Proposed",
    priority: str = "High",
    complexity: str = "Moderate",
    estimate: str = "1 week",
    dependencies: str = "[]",
    extra: str = "",
    h1: str | None = None,
    sections: dict[str, str] | None = None,
) -> str:
    """A canonical plan; every part overridable to build a broken one."""
    body = "\n".join(
        f"## {name}\n{text}\n" for name, text in (SECTIONS if sections is None else sections).items()
    )
    return (
        f"---\ntitle: {title}\nstatus: {status}\npriority: {priority}\ncomplexity: {complexity}\n"
        f"estimate: {estimate}\ndependencies: {dependencies}\n{extra}---\n# {h1 or title}\n\n{body}"
    )


def legacy_text(
    title: str = "Response Caching", *, status: str = "Proposed", dependencies: str = "None"
) -> str:
    """A plan in the reference template's legacy form."""
    body = "\n".join(f"## {name}\n{text}\n" for name, text in SECTIONS.items())
    return (
        f"# {title}\n\n**Status:** {status}\n**Priority:** High\n**Complexity:** Moderate\n"
        f"**Estimated Time:** 1 week\n**Dependencies:** {dependencies}\n\n{body}"
    )


def project(root: Path, plans: dict[str, str], designs: dict[str, str] | None = None) -> Path:
    """A project folder with pyproject.toml, plans/ and docs/design/."""
    (root / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    (root / "plans").mkdir(exist_ok=True)
    for name, text in plans.items():
        (root / "plans" / name).write_text(text)
    if designs:
        (root / "docs" / "design").mkdir(parents=True, exist_ok=True)
        for name, text in designs.items():
            (root / "docs" / "design" / name).write_text(text)
    return root
