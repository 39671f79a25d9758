"""`planner complete`: refused without green evidence; otherwise plan -> design, dependencies kept valid."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.cli_track import complete as complete_command
from planner.complete import CompleteError, complete
from planner.config import load_config
from planner.evidence import Evidence, FeatureEvidence, RecordedTest, write_evidence
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
2. Step two of {slug},
   written on two lines.

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


def runner(**features: tuple[int, int]):  # type: ignore[no-untyped-def]
    """A stand-in for the acceptance run: records `passed` tests verifying every step, then `failed` ones."""
    calls: list[str] = []

    def run(root: Path, evidence_file: Path, feature: str) -> None:
        calls.append(feature)
        recorded = {}
        for slug, (passed, failed) in features.items():
            tests = [
                RecordedTest(f"tests/acceptance/test_x.py::test_pass_{i}", "passed", (1, 2))
                for i in range(passed)
            ]
            tests += [
                RecordedTest(f"tests/acceptance/test_x.py::test_fail_{i}", "failed", (2,), "assert 1 == 2")
                for i in range(failed)
            ]
            recorded[slug.replace("_", "-")] = FeatureEvidence(passed, failed, 0, tuple(tests))
        write_evidence(evidence_file, Evidence("2026-11-26T04:00:00+00:00", "abc", "0.1.0", None, recorded))

    run.calls = calls  # type: ignore[attr-defined]
    return run


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


def test_refused_unless_in_progress_naming_the_status_and_the_command(project: Path) -> None:
    run = runner(beta=(1, 0))
    with pytest.raises(CompleteError) as caught:
        complete(load_config(project), "beta", run=run)
    assert "`beta` is Planned" in str(caught.value)
    assert "planner status beta 'In Progress'" in str(caught.value)
    assert run.calls == []  # refused before running anything
    write_plan(project, "gamma", "Proposed", "Low")
    with pytest.raises(CompleteError, match=r"gamma 'In Progress' --force"):
        complete(load_config(project), "gamma", run=run)


def test_refused_without_tests_naming_where_they_go(project: Path) -> None:
    run = runner(beta=(1, 0))
    with pytest.raises(CompleteError, match=r"no acceptance test.*step=N.*tests/acceptance/test_alpha\.py"):
        complete(load_config(project), "alpha", run=run)
    assert run.calls == ["alpha"]  # only alpha's tests were asked for


def test_refused_with_failing_tests_naming_them_with_their_messages(project: Path) -> None:
    with pytest.raises(CompleteError) as caught:
        complete(load_config(project), "alpha", run=runner(alpha=(2, 2)))
    message = str(caught.value)
    assert "1/2 steps done, 2 of 4 acceptance tests failing" in message
    assert "failed: tests/acceptance/test_x.py::test_fail_0: assert 1 == 2" in message
    assert "step 2 failing: Step two of alpha, written on two lines." in message
    assert (project / "plans" / "HIGH-alpha.md").exists() and not (project / "docs").exists()


def test_refused_while_a_step_has_no_test(project: Path) -> None:
    def run(root: Path, evidence_file: Path, feature: str) -> None:
        only_one = FeatureEvidence(1, 0, 0, (RecordedTest("t.py::test_one", "passed", (1,)),))
        write_evidence(evidence_file, Evidence("now", "abc", None, None, {"alpha": only_one}))

    with pytest.raises(CompleteError, match=r"1/2 steps done.*\n  step 2 no test: Step two"):
        complete(load_config(project), "alpha", run=run)


def test_refused_for_unknown_and_already_completed(project: Path) -> None:
    run = runner(alpha=(1, 0))
    with pytest.raises(CompleteError, match=r"no plan `gamma`.*alpha, beta"):
        complete(load_config(project), "gamma", run=run)
    complete(load_config(project), "alpha", run=run)
    with pytest.raises(CompleteError, match=r"docs/design/alpha\.md already exists"):
        complete(load_config(project), "alpha", run=run)


def test_moves_the_plan_in_git_and_keeps_dependencies_valid(repo: Path) -> None:
    done = complete(load_config(repo), "alpha", today=dt.date(2026, 11, 26), run=runner(alpha=(3, 0)))
    design = repo / "docs" / "design" / "alpha.md"
    assert done.design_path == design and done.staged
    assert not (repo / "plans" / "HIGH-alpha.md").exists()
    text = design.read_text()
    assert text.startswith(
        "---\ntitle: Alpha\nfeature: alpha\nstatus: Completed\npriority: High\nowner: team\n"
        "completed: 2026-11-26\ncommit: abc\n---\n"
    )
    assert "## Goal\n\nThe goal of alpha." in text
    assert "## Design\n\nThe design of alpha: a stage." in text
    assert "## Alternatives Considered\n\n- Doing nothing about alpha." in text
    assert "## Implementation Steps\n\n1. Step one of alpha.\n   - verified by `test_pass_0`" in text
    for dropped in ("User Benefit", "Open Questions", "estimate"):
        assert dropped not in text
    staged = git(repo, "status", "--porcelain").splitlines()
    assert "D  plans/HIGH-alpha.md" in staged and "A  docs/design/alpha.md" in staged
    validation = validate(load_config(repo))
    assert validation.errors == []  # beta still depends on alpha, now a completed design
    [alpha] = validation.designs
    assert alpha.slug == "alpha" and (alpha.priority, alpha.owner, alpha.completed) == (
        "High",
        "team",
        "2026-11-26",
    )
    assert [(s.number, s.text) for s in alpha.steps] == [
        (1, "Step one of alpha."),
        (2, "Step two of alpha, written on two lines."),
    ]


def test_outside_git_uses_plain_file_operations(project: Path) -> None:
    done = complete(load_config(project), "alpha", run=runner(alpha=(1, 0)))
    assert not done.staged and done.design_path.is_file()
    assert not (project / "plans" / "HIGH-alpha.md").exists()
    assert list((project / "docs" / "design").iterdir()) == [done.design_path]  # no temporary file left


ACCEPTANCE = """
import pytest


@pytest.mark.feature("alpha", step=1)
def test_one():
    pass


@pytest.mark.feature("alpha", step=2)
def test_two():
    assert {ok}


@pytest.mark.feature("beta", step=1)
def test_beta_is_not_run():
    raise SystemExit("complete alpha must not run beta's tests")
"""


def test_command_runs_the_tests_itself_refuses_then_completes(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: evidence recorded green, then a test broken; complete must see the break."""
    monkeypatch.chdir(repo)
    tests = repo / "tests" / "acceptance"
    tests.mkdir(parents=True)
    (tests / "test_alpha.py").write_text(ACCEPTANCE.format(ok="True"))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "tests")
    assert CliRunner().invoke(main, ["track"]).exit_code == 0  # a green record in .planner/evidence.json
    (tests / "test_alpha.py").write_text(ACCEPTANCE.format(ok="False"))
    refused = CliRunner().invoke(complete_command, ["alpha"])
    assert refused.exit_code == 1
    assert "failed: tests/acceptance/test_alpha.py::test_two: assert False" in refused.output
    assert (repo / "plans" / "HIGH-alpha.md").exists()
    (tests / "test_alpha.py").write_text(ACCEPTANCE.format(ok="True") + "# fixed, not committed yet\n")
    done = CliRunner().invoke(complete_command, ["alpha"])
    assert done.exit_code == 0, done.output
    assert "completed alpha: 2 of 2 steps verified" in done.output
    assert "wrote docs/design/alpha.md, removed plans/HIGH-alpha.md (staged in git)" in done.output
    head = git(repo, "rev-parse", "HEAD").strip()
    # The test file differs from HEAD: the design page records the commit as dirty, and says so.
    assert f"commit: {head[:12]} (dirty)" in (repo / "docs" / "design" / "alpha.md").read_text()
    assert "uncommitted changes" in done.output


def test_status_completed_says_what_complete_does(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    result = CliRunner().invoke(main, ["status", "alpha", "Completed"])
    assert result.exit_code == 1
    assert "run `planner complete alpha` on the In Progress plan" in result.output
    assert (
        "runs the feature's acceptance tests" in result.output
        and "every Implementation Step" in result.output
    )
