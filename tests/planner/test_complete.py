"""`planner complete`: refused without green evidence; otherwise plan -> design, dependencies kept valid."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli_track import complete as complete_command
from planner.complete import CompleteError, complete
from planner.config import load_config
from planner.evidence import EVIDENCE_PATH, Evidence, FeatureEvidence, RecordedTest, write_evidence
from planner.rules import validate

PLAN = """---
title: {title}
status: {status}
priority: {priority}
complexity: Simple
estimate: 3 days
dependencies: [{deps}]
feature: {slug}
owner: team
updated: 2026-11-20
---
# {title}

## Goal

The goal of {slug}.

## User Benefit

Users benefit.

## Design Proposal

The design of {slug}: a stage.

## Implementation Steps

1. Step one of {slug}.

## Open Questions

- An open question about {slug}?

## Alternatives Considered

- Doing nothing about {slug}.
"""


def write_plan(root: Path, slug: str, status: str, priority: str, deps: str = "") -> Path:
    path = root / "plans" / f"{priority.upper()}-{slug}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    title = slug.replace("-", " ").title()
    path.write_text(PLAN.format(title=title, status=status, priority=priority, deps=deps, slug=slug))
    return path


def record(root: Path, **features: tuple[int, int]) -> None:
    recorded = {}
    for slug, (passed, failed) in features.items():
        tests = [RecordedTest(f"tests/acceptance/test_x.py::test_pass_{i}", "passed") for i in range(passed)]
        tests += [RecordedTest(f"tests/acceptance/test_x.py::test_fail_{i}", "failed") for i in range(failed)]
        recorded[slug.replace("_", "-")] = FeatureEvidence(passed, failed, 0, tuple(tests))
    write_evidence(
        root / EVIDENCE_PATH, Evidence("2026-11-26T04:00:00+00:00", "abc", "0.1.0", None, recorded)
    )


def git(root: Path, *args: str) -> str:
    base = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    return subprocess.run([*base, *args], cwd=root, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small roadmap: `alpha` (In Progress) and `beta`, which depends on it."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\n\n[tool.planner]\nlanes = 1\n')
    write_plan(tmp_path, "alpha", "In Progress", "High")
    write_plan(tmp_path, "beta", "Planned", "Medium", deps="alpha")
    (tmp_path / ".gitignore").write_text("/.planner/\n")
    return tmp_path


@pytest.fixture
def repo(project: Path) -> Path:
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "commit", "-qm", "roadmap")
    return project


def test_the_fixture_roadmap_is_valid(project: Path) -> None:
    assert validate(load_config(project)).errors == []


def test_refused_without_evidence(project: Path) -> None:
    with pytest.raises(CompleteError, match=r"no evidence .*planner track"):
        complete(load_config(project), "alpha")


def test_refused_without_tests_naming_where_they_go(project: Path) -> None:
    record(project, beta=(1, 0))
    with pytest.raises(CompleteError, match=r"no acceptance test.*tests/acceptance/test_alpha\.py"):
        complete(load_config(project), "alpha")


def test_refused_with_failing_tests_naming_them(project: Path) -> None:
    record(project, alpha=(2, 2))
    with pytest.raises(CompleteError) as caught:
        complete(load_config(project), "alpha")
    assert "2 of 4 acceptance tests fail" in str(caught.value)
    assert "test_x.py::test_fail_0" in str(caught.value) and "test_x.py::test_fail_1" in str(caught.value)
    assert (project / "plans" / "HIGH-alpha.md").exists() and not (project / "docs").exists()


def test_refused_for_unknown_and_already_completed(project: Path) -> None:
    record(project, alpha=(1, 0))
    with pytest.raises(CompleteError, match=r"no plan `gamma`.*alpha, beta"):
        complete(load_config(project), "gamma")
    complete(load_config(project), "alpha")
    with pytest.raises(CompleteError, match=r"docs/design/alpha\.md already exists"):
        complete(load_config(project), "alpha")


def test_moves_the_plan_in_git_and_keeps_dependencies_valid(repo: Path) -> None:
    record(repo, alpha=(3, 0))
    done = complete(load_config(repo), "alpha", today=dt.date(2026, 11, 26))
    design = repo / "docs" / "design" / "alpha.md"
    assert done.design_path == design and done.staged
    assert not (repo / "plans" / "HIGH-alpha.md").exists()
    text = design.read_text()
    assert text.startswith(
        "---\ntitle: Alpha\nfeature: alpha\nstatus: Completed\ncompleted: 2026-11-26\n---\n"
    )
    assert "## Goal\n\nThe goal of alpha." in text
    assert "## Design\n\nThe design of alpha: a stage." in text
    assert "## Alternatives Considered\n\n- Doing nothing about alpha." in text
    for dropped in ("User Benefit", "Implementation Steps", "Open Questions", "estimate", "Step one"):
        assert dropped not in text
    assert "3 of 3 acceptance tests passing" in text
    staged = git(repo, "status", "--porcelain").splitlines()
    assert "D  plans/HIGH-alpha.md" in staged and "A  docs/design/alpha.md" in staged
    validation = validate(load_config(repo))
    assert validation.errors == []  # beta still depends on alpha, now a completed design
    assert [d.slug for d in validation.designs] == ["alpha"]


def test_outside_git_uses_plain_file_operations(project: Path) -> None:
    record(project, alpha=(1, 0))
    done = complete(load_config(project), "alpha")
    assert not done.staged and done.design_path.is_file()
    assert not (project / "plans" / "HIGH-alpha.md").exists()
    assert list((project / "docs" / "design").iterdir()) == [done.design_path]  # no temporary file left


def test_command_refuses_then_completes(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    record(repo, alpha=(1, 1))
    refused = CliRunner().invoke(complete_command, ["alpha"])
    assert refused.exit_code == 1 and "test_x.py::test_fail_0" in refused.output
    record(repo, alpha=(2, 0))
    done = CliRunner().invoke(complete_command, ["alpha"])
    assert done.exit_code == 0, done.output
    assert "wrote docs/design/alpha.md, removed plans/HIGH-alpha.md (staged in git)" in done.output
    assert "evidence is from commit abc" in done.output  # the recorded commit is not HEAD
