"""Unwritten sections: warnings while a plan is a Proposed draft, errors from Planned on; to-do filler (TODO,
TBD, `...`, `-`, `?`, a lone HTML comment) reported so that `validate --strict` fails on it (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from plan_docs import SECTIONS, plan_text

from planner.cli import main
from planner.config import load_config
from planner.rules import validate
from planner.sections import filler


def found(root: Path) -> list[tuple[str, str]]:
    return [(p.code, p.severity) for p in validate(load_config(root)).problems]


@pytest.mark.parametrize(
    ("status", "severity"), [("Proposed", "warning"), ("Planned", "error"), ("In Progress", "error")]
)
def test_unwritten_sections_are_warnings_only_in_a_draft(root: Path, status: str, severity: str) -> None:
    sections = {**SECTIONS, "Goal": "", "User Benefit": "[Why is this valuable?]"}
    (root / "plans" / "HIGH-response-caching.md").write_text(plan_text(status=status, sections=sections))
    assert sorted(found(root)) == [("PL042", severity), ("PL043", severity)]


def test_a_draft_still_has_its_other_errors(root: Path) -> None:
    (root / "plans" / "HIGH-response-caching.md").write_text(plan_text(estimate="soon", sections={}))
    codes = found(root)
    assert ("PL050", "error") in codes and ("PL040", "error") in codes  # missing sections stay errors


@pytest.mark.parametrize(
    "body",
    [
        "TODO",
        "TBD",
        "tbd",
        "...",
        "…",
        "-",
        "?",
        "<!-- TODO -->",
        "<!--\nsay why\n-->",
        "- TODO: decide\n- TBD",
    ],
)
def test_to_do_filler_fails_strict_validation(root: Path, runner: CliRunner, body: str) -> None:
    sections = {**SECTIONS, "Open Questions": body}
    (root / "plans" / "HIGH-response-caching.md").write_text(plan_text(status="Planned", sections=sections))
    assert found(root) == [("PL045", "warning")]
    assert runner.invoke(main, ["validate"]).exit_code == 0
    strict = runner.invoke(main, ["validate", "--strict"])
    assert strict.exit_code == 1
    assert "PL045 section 'Open Questions' holds only" in strict.output


@pytest.mark.parametrize(
    "body",
    [
        "None: the design is settled.",
        "N/A",
        "- Should TTLs be per model?",
        "See `...` below.\n\nTBD in v2 only",
    ],
)
def test_real_content_is_not_filler(body: str) -> None:
    assert filler(body) is None


def test_a_draft_scaffold_builds_but_strict_names_its_unfilled_sections(
    root: Path, runner: CliRunner
) -> None:
    assert runner.invoke(main, ["new", "HIGH-x"]).exit_code == 0
    assert runner.invoke(main, ["validate"]).exit_code == 0
    assert runner.invoke(main, ["status", "x", "Planned"]).exit_code == 0
    planned = runner.invoke(main, ["validate"])
    assert planned.exit_code == 1 and "6 error(s)" in planned.output
