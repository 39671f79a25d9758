"""`planner new`: names, refusals, prompts, templates, and output that validates but for the to-dos."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner
from plan_docs import plan_text

from planner.cli import main
from planner.config import load_config
from planner.rules import validate


def test_new_plan_validates_except_for_the_unfilled_sections(root: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["new", "HIGH-response-caching"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "plans/HIGH-response-caching.md"
    text = (root / "plans" / "HIGH-response-caching.md").read_text()
    assert "title: Response Caching\nstatus: Proposed\npriority: High\n" in text
    assert "# Response Caching\n" in text
    assert f"dependencies: []\nupdated: {dt.date.today().isoformat()}\n---\n" in text  # a new plan is dated
    problems = validate(load_config(root)).problems
    assert {p.code for p in problems} == {"PL043"}
    assert len(problems) == 6


def test_options_fill_the_fields(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-rate-limiting.md").write_text(plan_text("Rate Limiting"))
    (root / "plans" / "LOW-usage.md").write_text(plan_text("Usage", priority="Low"))
    args = [
        "new",
        "MEDIUM-budgets",
        "--title",
        "Budgets: per key",
        "--complexity",
        "complex",
        "--estimate",
        "3-5 days",
    ]
    result = runner.invoke(main, [*args, "--depends", "rate-limiting,usage", "--depends", "usage"])
    assert result.exit_code == 0, result.output
    text = (root / "plans" / "MEDIUM-budgets.md").read_text()
    assert "title: 'Budgets: per key'\n" in text
    assert "complexity: Complex\n" in text
    assert "estimate: 3-5 days\n" in text
    assert "dependencies: [rate-limiting, usage]\n" in text
    assert "# Budgets: per key\n" in text


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("URGENT-caching", "unknown priority 'URGENT'"),
        ("high-caching", "write the priority in capitals: HIGH-caching"),
        ("HIGH-Response-Caching", "did you mean HIGH-response-caching?"),
        ("HIGH-response caching", "did you mean HIGH-response-caching?"),
        ("HIGH-a_b", "did you mean HIGH-a-b?"),
        # Accented letters are transliterated (NFKD), not dropped: not `HIGH-n` (issue 13).
        ("HIGH-ünï", "did you mean HIGH-uni?"),
        ("HIGH-café-crème", "did you mean HIGH-cafe-creme?"),
        ("HIGH-Straße-Œuvre", "did you mean HIGH-strasse-oeuvre?"),
        ("plans/HIGH-caching", "is a path"),
        ("HIGH-..-x", "is a path"),
        ("caching", "is not PRIORITY-slug"),
    ],
)
def test_bad_names_show_a_valid_example(root: Path, runner: CliRunner, name: str, message: str) -> None:
    result = runner.invoke(main, ["new", name])
    assert result.exit_code == 2
    assert message in result.output
    assert "planner new HIGH-response-caching" in result.output
    assert list((root / "plans").iterdir()) == []


def test_refuses_to_overwrite_any_priority(root: Path, runner: CliRunner) -> None:
    original = plan_text()
    (root / "plans" / "HIGH-response-caching.md").write_text(original)
    for name in ("HIGH-response-caching", "LOW-response-caching"):
        result = runner.invoke(main, ["new", name])
        assert result.exit_code == 1
        assert "already uses the slug 'response-caching'" in result.output
    assert (root / "plans" / "HIGH-response-caching.md").read_text() == original
    assert not (root / "plans" / "LOW-response-caching.md").exists()


def test_refuses_a_completed_designs_slug(root: Path, runner: CliRunner) -> None:
    (root / "docs" / "design").mkdir(parents=True)
    (root / "docs" / "design" / "response-caching.md").write_text("# Response Caching\n")
    assert runner.invoke(main, ["new", "HIGH-response-caching"]).exit_code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--estimate", "soon"], "cannot read estimate 'soon'"),
        (["--complexity", "Hard"], "unknown complexity 'Hard'"),
        (["--depends", "nope"], "unknown dependency 'nope'"),
        (["--depends", "x"], "cannot depend on itself"),
    ],
)
def test_bad_fields_are_usage_errors(root: Path, runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(main, ["new", "HIGH-x", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (root / "plans" / "HIGH-x.md").exists()


def test_prompts_only_in_a_terminal(root: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("planner.cli._stdin_is_terminal", lambda: True)
    (root / "plans" / "HIGH-rate-limiting.md").write_text(plan_text("Rate Limiting"))
    answers = "My Title\nsimple\nsoon\n2 weeks\nrate-limiting\n"
    result = runner.invoke(main, ["new", "LOW-thing"], input=answers)
    assert result.exit_code == 0, result.output
    assert "cannot read estimate 'soon'" in result.output  # asked again
    text = (root / "plans" / "LOW-thing.md").read_text()
    assert "title: My Title\n" in text
    assert "complexity: Simple\n" in text
    assert "estimate: 2 weeks\n" in text
    assert "dependencies: [rate-limiting]\n" in text


def test_no_prompt_without_a_terminal(root: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["new", "LOW-thing"], input="")
    assert result.exit_code == 0, result.output
    assert "Title" not in result.output
    assert "complexity: Moderate\n" in (root / "plans" / "LOW-thing.md").read_text()


def test_project_template_overrides(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "_template.md").write_text(
        "---\ntitle: {{ title | yaml }}\nstatus: {{ status }}\npriority: {{ priority }}\n"
        "complexity: {{ complexity }}\nestimate: {{ estimate }}\ndependencies: {{ dependencies | yaml }}\n"
        "owner: team-{{ slug }}\n---\n# {{ title }}\n"
        "{% for s in sections %}\n## {{ s.title }}\nTODO\n{% endfor %}"
    )
    assert runner.invoke(main, ["new", "LOW-thing"]).exit_code == 0
    text = (root / "plans" / "LOW-thing.md").read_text()
    assert "owner: team-thing\n" in text
    assert "## Goal\nTODO\n" in text
    result = runner.invoke(main, ["validate"])
    assert "_template.md" not in result.output  # the template is not a plan


def test_broken_project_template_is_reported(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "_template.md").write_text("# {{ title \n")
    result = runner.invoke(main, ["new", "LOW-thing"])
    assert result.exit_code == 1
    assert "_template.md line 1" in result.output
    assert not (root / "plans" / "LOW-thing.md").exists()


def test_creates_the_plans_folder(root: Path, runner: CliRunner) -> None:
    (root / "plans").rmdir()
    assert runner.invoke(main, ["new", "LOW-thing"]).exit_code == 0
    assert (root / "plans" / "LOW-thing.md").is_file()


def test_depends_takes_a_title_with_spaces(root: Path, runner: CliRunner) -> None:
    # `--depends "Alpha One"` reported an unknown dependency `Alpha` (issue 13).
    (root / "plans" / "HIGH-alpha-one.md").write_text(plan_text("Alpha One"))
    (root / "plans" / "LOW-beta.md").write_text(plan_text("Beta Two", priority="Low"))
    (root / "plans" / "LOW-gamma.md").write_text(plan_text("Gamma", priority="Low"))
    args = ["new", "HIGH-x", "--depends", "Alpha One", "--depends", "beta two, gamma"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "dependencies: [alpha-one, beta, gamma]\n" in (root / "plans" / "HIGH-x.md").read_text()
    spaced = runner.invoke(main, ["new", "HIGH-y", "--depends", "alpha one", "--depends", "beta gamma"])
    assert spaced.exit_code == 0, spaced.output
    assert "dependencies: [alpha-one, beta, gamma]\n" in (root / "plans" / "HIGH-y.md").read_text()
    wrong = runner.invoke(main, ["new", "HIGH-z", "--depends", "Alpha Once"])
    assert wrong.exit_code == 2
    assert "unknown dependency 'Alpha Once'; did you mean 'alpha-one'?" in wrong.output
