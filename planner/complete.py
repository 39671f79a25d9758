"""`planner complete SLUG`: verify a feature by running its acceptance tests, then move its plan to its
design page in `docs/design/`.

Only an In Progress plan (or one already marked Completed by hand) is completed. `complete` runs the
feature's acceptance tests itself (only the tests marked with its feature, against the in-process gateway)
and refuses unless every Implementation Step is verified by passing tests and no test fails: recorded
evidence could be from another commit or an edited tree. The design keeps the decisions (goal, design,
alternatives considered) and the steps with the tests that verify each, plus priority, owner, completion
date and commit (marked dirty when the tree had uncommitted changes); it drops what only mattered before
the work was done (user benefit, estimate, open questions). Other plans may keep depending on the slug:
the validator accepts a completed design as a dependency target.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from planner.config import PlannerConfig
from planner.edit import write_atomic
from planner.evidence import Evidence, load_evidence
from planner.model import STEPS_SECTION, Plan
from planner.rules import validate
from planner.track import COMPLETED, IN_PROGRESS, StepResult, TrackError, run_acceptance, step_results

# Plan sections carried into the design, under the heading they get there (the steps are written apart).
CARRIED_SECTIONS = (
    ("Goal", "Goal"),
    ("Design Proposal", "Design"),
    ("Alternatives Considered", "Alternatives Considered"),
)
_WIDTH = 115


class CompleteError(Exception):
    """The feature cannot be completed; the message says why and what to do."""


@dataclass(frozen=True)
class Completion:
    """What `complete` did."""

    design_path: Path
    removed_plan: Path
    staged: bool  # True when the move was recorded in the git index
    warnings: tuple[str, ...] = field(default=())
    steps: tuple[StepResult, ...] = ()


Runner = Callable[[Path, Path, str], None]


def _run_feature_tests(root: Path, evidence_file: Path, feature: str) -> None:
    run_acceptance(root, evidence_file, feature=feature)


def complete(
    config: PlannerConfig,
    slug: str,
    *,
    today: dt.date | None = None,
    run: Runner = _run_feature_tests,
) -> Completion:
    """Run the acceptance tests of plan `slug`; when every step is verified and none fails, write
    `docs/design/SLUG.md` and remove the plan. `run(root, evidence_file, feature)` runs the tests."""
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
    if plan.status not in (IN_PROGRESS, COMPLETED):
        statuses = list(config.statuses)
        force = ""
        if plan.status in statuses and IN_PROGRESS in statuses:
            force = " --force" if statuses.index(IN_PROGRESS) - statuses.index(plan.status) > 1 else ""
        raise CompleteError(
            f"`{slug}` is {plan.status}: only an In Progress plan can be completed; start the work with "
            f"`planner status {slug} 'In Progress'{force}`, then verify every step and run `planner complete "
            f"{slug}` again"
        )
    if not plan.steps:
        raise CompleteError(
            f"`{slug}` declares no {STEPS_SECTION}: number them in {_rel(plan.path, config)} and name the "
            f"step each acceptance test verifies, e.g. @pytest.mark.feature({plan.feature!r}, step=1)"
        )
    with tempfile.TemporaryDirectory(prefix="planner-complete-") as scratch:
        evidence_file = Path(scratch) / "evidence.json"
        try:
            run(config.root, evidence_file, plan.feature)
            evidence = load_evidence(evidence_file)
        except TrackError as exc:
            raise CompleteError(f"could not run the acceptance tests of `{slug}`: {exc}") from exc
    if evidence is None:
        raise CompleteError(f"the acceptance run of `{slug}` recorded no evidence")
    results = _check_verified(plan, evidence)
    warnings: tuple[str, ...] = ()
    if evidence.from_dirty_tree:
        warnings = (
            "the working tree has uncommitted changes: the design page records the commit as dirty; "
            "commit first for a clean record",
        )
    text = render_design(plan, evidence, today or dt.date.today(), results)
    design_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(design_path, text)
    try:
        staged = _remove_plan(config.root, plan.path, design_path)
    except (OSError, subprocess.SubprocessError) as exc:
        design_path.unlink(missing_ok=True)  # leave the roadmap as it was: the plan is still the record
        raise CompleteError(f"could not remove {_rel(plan.path, config)}: {exc}") from exc
    return Completion(design_path, plan.path, staged, warnings, results)


def _check_verified(plan: Plan, evidence: Evidence) -> tuple[StepResult, ...]:
    fe = evidence.for_feature(plan.feature)
    test_file = f"tests/acceptance/test_{plan.feature.replace('-', '_')}.py"
    if fe is None or not fe.tests:
        raise CompleteError(
            f"`{plan.slug}` has no acceptance test: add tests marked "
            f"@pytest.mark.feature({plan.feature!r}, step=N) in {test_file}"
        )
    problems: list[str] = []
    for test in fe.tests:
        if test.outcome == "failed":
            problems.append(f"  failed: {test.name}: {(test.message or '(no message)').splitlines()[0]}")
    results = step_results(plan.steps, fe)
    for result in results:
        if not result.done:
            problems.append(f"  step {result.number} {result.state}: {_short(result.text)}")
    if problems:
        done = sum(r.done for r in results)
        raise CompleteError(
            f"`{plan.slug}` is not verified ({done}/{len(results)} steps done, "
            f"{fe.failed} of {len(fe.tests)} acceptance tests failing):\n" + "\n".join(problems)
        )
    return results


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_design(
    plan: Plan, evidence: Evidence, completed: dt.date, results: tuple[StepResult, ...] = ()
) -> str:
    """The design page for `plan`: front matter, then the sections worth keeping once the work is done."""
    front: dict[str, object] = {
        "title": plan.title,
        "feature": plan.feature,
        "status": "Completed",
        "priority": plan.priority,
        "owner": plan.owner,
        "completed": completed,
        "commit": evidence.commit_label(12) if evidence.commit else None,
    }
    front = {key: value for key, value in front.items() if value}
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        f"# {plan.title}",
        "",
    ]
    fe = evidence.for_feature(plan.feature)
    if fe is not None:
        lines += [
            f"Completed {completed.isoformat()} at commit {evidence.commit_label(12)}, with every "
            "implementation step verified by its acceptance tests (the roadmap shows their current state).",
            "",
        ]
    for source, heading in CARRIED_SECTIONS:
        if heading == "Alternatives Considered" and results:
            lines += [f"## {STEPS_SECTION}", "", *design_steps(results), ""]
        section = plan.section(source)
        if section is not None and section.body.strip():
            lines += [f"## {heading}", "", section.body.strip(), ""]
    return "\n".join(lines)


def design_steps(results: tuple[StepResult, ...]) -> list[str]:
    """The numbered step list of a design page, each step with a sub-item naming the tests verifying it
    (`planner.model.parse_steps` reads the steps back without those sub-items)."""
    lines: list[str] = []
    for result in results:
        head = f"{result.number}. "
        indent = " " * len(head)
        lines += textwrap.wrap(
            result.text, _WIDTH, initial_indent=head, subsequent_indent=indent, break_on_hyphens=False
        )
        names = ", ".join(f"`{t.name.rpartition('::')[2]}`" for t in result.tests)
        lines.append(f"{indent}- verified by {names}")
    return lines


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
