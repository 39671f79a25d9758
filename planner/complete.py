"""`planner complete SLUG`: move a verified feature's plan to its design page in `docs/design/`.

A plan becomes a design only when its acceptance tests are all green in the recorded evidence. The design
keeps the decisions (goal, design, alternatives considered) and drops what only mattered before the work
was done (user benefit, implementation steps, estimate, open questions). Other plans may keep depending on
the slug: the validator accepts a completed design as a dependency target.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from planner.config import PlannerConfig
from planner.edit import write_atomic
from planner.evidence import EVIDENCE_PATH, Evidence, load_evidence
from planner.model import Plan
from planner.rules import validate

# Plan sections carried into the design, under the heading they get there.
CARRIED_SECTIONS = (
    ("Goal", "Goal"),
    ("Design Proposal", "Design"),
    ("Alternatives Considered", "Alternatives Considered"),
)


class CompleteError(Exception):
    """The feature cannot be completed; the message says why and what to do."""


@dataclass(frozen=True)
class Completion:
    """What `complete` did."""

    design_path: Path
    removed_plan: Path
    staged: bool  # True when the move was recorded in the git index
    warnings: tuple[str, ...] = field(default=())


def complete(config: PlannerConfig, slug: str, *, today: dt.date | None = None) -> Completion:
    """Write `docs/design/SLUG.md` from the plan `slug` and remove the plan, if its evidence is all green."""
    validation = validate(config)
    design_path = config.design_path / f"{slug}.md"
    if any(d.slug == slug for d in validation.designs) or design_path.exists():
        raise CompleteError(f"{_rel(design_path, config)} already exists: `{slug}` is already completed")
    plan = next((p for p in validation.plans if p.slug == slug), None)
    if plan is None:
        unreadable = [path for path in validation.files if path.stem.partition("-")[2] == slug]
        if unreadable:
            raise CompleteError(
                f"{_rel(unreadable[0], config)} cannot be read as a plan; `planner validate` says what to fix"
            )
        known = ", ".join(sorted(p.slug for p in validation.plans)) or "none"
        raise CompleteError(f"no plan `{slug}` in {config.plans_dir}/ (plans: {known})")
    evidence_file = config.root / EVIDENCE_PATH
    evidence = load_evidence(evidence_file)
    if evidence is None:
        raise CompleteError(f"no evidence in {EVIDENCE_PATH}: run `planner track` first")
    _check_green(plan, evidence)
    warnings = _staleness(config.root, evidence)
    text = render_design(plan, evidence, today or dt.date.today())
    design_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(design_path, text)
    try:
        staged = _remove_plan(config.root, plan.path, design_path)
    except (OSError, subprocess.SubprocessError) as exc:
        design_path.unlink(missing_ok=True)  # leave the roadmap as it was: the plan is still the record
        raise CompleteError(f"could not remove {_rel(plan.path, config)}: {exc}") from exc
    return Completion(design_path, plan.path, staged, warnings)


def _check_green(plan: Plan, evidence: Evidence) -> None:
    fe = evidence.for_feature(plan.feature)
    test_file = f"tests/acceptance/test_{plan.feature.replace('-', '_')}.py"
    if fe is None or fe.total == 0:
        skipped = f" ({fe.skipped} skipped)" if fe is not None and fe.skipped else ""
        raise CompleteError(
            f"`{plan.slug}` has no acceptance test that ran{skipped}: add tests marked "
            f"@pytest.mark.feature({plan.feature!r}) in {test_file}, then run `planner track`"
        )
    if fe.failed:
        failing = "\n".join(f"  {t.name}" for t in fe.tests if t.outcome == "failed")
        raise CompleteError(
            f"`{plan.slug}` is not verified: {fe.failed} of {fe.total} acceptance tests fail:\n{failing}"
        )


def _staleness(root: Path, evidence: Evidence) -> tuple[str, ...]:
    head = _git(root, "rev-parse", "HEAD")
    recorded = (evidence.git_commit or "").removesuffix("-dirty")
    if head and recorded and head != recorded:
        return (
            f"the evidence is from commit {recorded[:12]}, HEAD is {head[:12]}; `planner track` refreshes it",
        )
    return ()


def render_design(plan: Plan, evidence: Evidence, completed: dt.date) -> str:
    """The design page for `plan`: front matter, then the sections worth keeping once the work is done."""
    front = {"title": plan.title, "feature": plan.feature, "status": "Completed", "completed": completed}
    fe = evidence.for_feature(plan.feature)
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        f"# {plan.title}",
        "",
    ]
    if fe is not None:
        commit = f" at commit {evidence.git_commit[:12]}" if evidence.git_commit else ""
        lines += [
            f"Completed {completed.isoformat()}: {fe.passed} of {fe.total} acceptance tests passing "
            f"({evidence.generated_at}{commit}).",
            "",
        ]
    for source, heading in CARRIED_SECTIONS:
        section = plan.section(source)
        if section is not None and section.body.strip():
            lines += [f"## {heading}", "", section.body.strip(), ""]
    return "\n".join(lines)


def _remove_plan(root: Path, plan_path: Path, design_path: Path) -> bool:
    """Remove the plan, through git when inside a work tree (staging the design too); True when staged."""
    if _git(root, "rev-parse", "--is-inside-work-tree") == "true":
        tracked = _git(root, "ls-files", "--error-unmatch", "--", str(plan_path)) is not None
        if tracked:
            # -f: the working copy may differ from the index; its content is already in the design page.
            subprocess.run(
                ["git", "rm", "-q", "-f", "--", str(plan_path)], cwd=root, check=True, capture_output=True
            )
        else:
            plan_path.unlink()
        subprocess.run(["git", "add", "--", str(design_path)], cwd=root, check=True, capture_output=True)
        return True
    plan_path.unlink()
    return False


def _git(root: Path, *args: str) -> str | None:
    """Output of a read-only git command, or None outside git or on failure."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _rel(path: Path, config: PlannerConfig) -> str:
    try:
        return path.relative_to(config.root).as_posix()
    except ValueError:
        return str(path)
