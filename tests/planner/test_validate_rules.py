"""`planner validate`: every rule, on fixture documents built in a temporary project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from plan_docs import SECTIONS, plan_text

from planner.cli import main
from planner.config import load_config
from planner.rules import RULES, validate

ALL_STATUSES = "Proposed, Planned, In Progress, Completed, Rejected, Withdrawn, Deferred, Superseded"


def codes(root: Path) -> list[tuple[str, str, int | None]]:
    result = validate(load_config(root))
    return [(p.path.name, p.code, p.line) for p in result.problems]


def write(root: Path, name: str, text: str) -> Path:
    path = root / "plans" / name
    path.write_text(text)
    return path


def test_clean_plan_passes(root: Path, runner: CliRunner) -> None:
    write(root, "HIGH-response-caching.md", plan_text())
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 0, result.output
    assert "1 file(s) checked: 0 error(s), 0 warning(s)" in result.output


@pytest.mark.parametrize(
    ("name", "text", "code", "line"),
    [
        ("high-response-caching.md", plan_text(), "PL001", None),
        ("HIGH-Response_Caching.md", plan_text(), "PL001", None),
        ("URGENT-response-caching.md", plan_text(), "PL001", None),
        ("HIGH-x.md", "---\ntitle: x\nstatus: [Proposed\n---\n# x\n", "PL003", 4),
        ("HIGH-x.md", "---\ntitle: x\n  status: Proposed\n---\n# x\n", "PL003", 3),
        ("HIGH-x.md", "---\ntitle: x\nstatus: Proposed\n", "PL004", 1),
        ("HIGH-x.md", "---\n- a\n- b\n---\n# x\n", "PL004", 2),
        ("HIGH-x.md", plan_text(extra="status: Planned\n"), "PL004", 8),
        ("HIGH-x.md", "# Just a page\n\nSome text.\n", "PL005", 1),
        ("HIGH-response-caching.md", plan_text().replace("estimate: 1 week\n", ""), "PL010", 1),
        ("HIGH-response-caching.md", plan_text(title="[a, b]", h1="x"), "PL011", 2),
        ("HIGH-response-caching.md", plan_text(status="in progress"), "PL012", 3),
        ("HIGH-response-caching.md", plan_text(complexity="Hard"), "PL012", 5),
        ("LOW-response-caching.md", plan_text(), "PL013", 4),
        ("HIGH-response-caching.md", plan_text(extra="colour: blue\n"), "PL014", 8),
        ("HIGH-response-caching.md", plan_text(dependencies="[Rate Limiting]"), "PL015", 7),
        ("HIGH-response-caching.md", plan_text(extra="health: fine\n"), "PL016", 8),
        ("HIGH-response-caching.md", plan_text(extra="target: next spring\n"), "PL016", 8),
        ("HIGH-response-caching.md", plan_text(extra="discussion: see slack\n"), "PL016", 8),
        ("HIGH-response-caching.md", plan_text(extra="reviewers: ana\n"), "PL016", 8),
        ("HIGH-response-caching.md", plan_text().replace("# Response Caching\n", ""), "PL030", 9),
        ("HIGH-response-caching.md", plan_text(h1="Caching"), "PL031", 9),
        (
            "HIGH-response-caching.md",
            plan_text(sections={k: v for k, v in SECTIONS.items() if k != "Goal"}),
            "PL040",
            None,
        ),
        (
            "HIGH-response-caching.md",
            plan_text(sections=dict(reversed(list(SECTIONS.items())))),
            "PL041",
            None,
        ),
        (
            "HIGH-response-caching.md",
            plan_text(status="Planned", sections={**SECTIONS, "Goal": ""}),
            "PL042",
            11,
        ),
        (
            "HIGH-response-caching.md",
            plan_text(status="Planned", sections={**SECTIONS, "Goal": "[What are we trying to achieve?]"}),
            "PL043",
            12,
        ),
        (
            "HIGH-response-caching.md",
            plan_text(
                status="Planned", sections={**SECTIONS, "Open Questions": "- Question 1?\n- Question 2?"}
            ),
            "PL043",
            None,
        ),
        (
            "HIGH-response-caching.md",
            plan_text(sections={**SECTIONS, "Alternatives Considered": "None.\n\n## Goal\nAgain."}),
            "PL044",
            30,
        ),
        ("HIGH-response-caching.md", plan_text(sections={**SECTIONS, "Goal": "TBD"}), "PL045", 11),
        ("HIGH-response-caching.md", plan_text(estimate="soon"), "PL050", 6),
        ("HIGH-response-caching.md", plan_text(estimate="5"), "PL050", 6),
        ("HIGH-response-caching.md", plan_text(estimate="2 fortnights"), "PL050", 6),
        ("HIGH-response-caching.md", plan_text(dependencies="[nothing-here]"), "PL060", 7),
        ("HIGH-response-caching.md", plan_text(dependencies="[response-caching]"), "PL061", 7),
        ("HIGH-response-caching.md", plan_text(status="Completed"), "PL070", 3),
        ("HIGH-response-caching.md", plan_text(status="Superseded"), "PL071", 3),
        (
            "HIGH-response-caching.md",
            plan_text(status="Superseded", extra="superseded_by: smart-cache\n"),
            "PL072",
            8,
        ),
        (
            "HIGH-response-caching.md",
            plan_text(status="Superseded", extra="superseded_by: response-caching\n"),
            "PL072",
            8,
        ),
    ],
)
def test_rule(root: Path, runner: CliRunner, name: str, text: str, code: str, line: int | None) -> None:
    write(root, name, text)
    found = [(c, ln) for _, c, ln in codes(root)]
    assert code in [c for c, _ in found], found
    if line is not None:
        assert (code, line) in found, found
    result = runner.invoke(main, ["validate"])
    severity = next(r.severity for r in RULES if r.code == code)
    assert result.exit_code == (1 if severity == "error" else 0), result.output
    assert f"{severity} {code} " in result.output
    assert "hint: " in result.output


def test_every_rule_has_a_case_here() -> None:
    source = Path(__file__).read_text()
    assert [rule.code for rule in RULES if f'"{rule.code}"' not in source] == []


def test_every_problem_has_a_hint_and_a_known_code(root: Path) -> None:
    write(root, "HIGH-response-caching.md", plan_text(status="Done", estimate="x", dependencies="[a, a]"))
    write(root, "nonsense.md", "---\n: :\n---\n")
    known = {rule.code for rule in RULES}
    result = validate(load_config(root))
    assert result.problems
    for found in result.problems:
        assert found.code in known
        assert found.hint


def test_did_you_mean_for_case_slips_and_near_misses(root: Path, runner: CliRunner) -> None:
    write(root, "HIGH-response-caching.md", plan_text(status="in progres"))
    result = runner.invoke(main, ["validate"])
    assert "did you mean 'In Progress'?" in result.output


def test_yaml_error_line_counts_the_opening_dashes(root: Path, runner: CliRunner) -> None:
    text = "---\ntitle: Response Caching\nstatus: Proposed\npriority: High: yes\n---\n# Response Caching\n"
    write(root, "HIGH-response-caching.md", text)
    result = runner.invoke(main, ["validate"])
    assert "plans/HIGH-response-caching.md:4:" in result.output
    assert "PL003" in result.output


def test_duplicate_slug_across_priorities(root: Path) -> None:
    write(root, "HIGH-response-caching.md", plan_text())
    write(root, "LOW-response-caching.md", plan_text(priority="Low"))
    found = codes(root)
    assert ("HIGH-response-caching.md", "PL020", 1) in found
    assert ("LOW-response-caching.md", "PL020", 1) in found


def test_slug_of_a_completed_design(root: Path) -> None:
    write(root, "HIGH-response-caching.md", plan_text())
    (root / "docs" / "design").mkdir(parents=True)
    (root / "docs" / "design" / "response-caching.md").write_text("# Response Caching\n")
    assert ("HIGH-response-caching.md", "PL021", 1) in codes(root)


def test_dependency_on_a_completed_design_is_valid_and_counts_as_completed(root: Path) -> None:
    write(root, "HIGH-response-caching.md", plan_text(status="In Progress", dependencies="[usage-tracking]"))
    (root / "docs" / "design").mkdir(parents=True)
    (root / "docs" / "design" / "usage-tracking.md").write_text("---\ntitle: Usage\n---\n# Usage\n")
    (root / "docs" / "design" / "index.md").write_text("# Designs\n")
    result = validate(load_config(root))
    assert result.problems == []
    assert [d.slug for d in result.designs] == ["usage-tracking"]
    assert result.designs[0].title == "Usage"


def test_unknown_dependency_suggests_a_near_slug(root: Path, runner: CliRunner) -> None:
    write(root, "HIGH-response-caching.md", plan_text(dependencies="[rate-limitng]"))
    write(root, "HIGH-rate-limiting.md", plan_text("Rate Limiting"))
    result = runner.invoke(main, ["validate"])
    assert "PL060" in result.output
    assert "did you mean 'rate-limiting'?" in result.output


def test_cycle_prints_its_path(root: Path, runner: CliRunner) -> None:
    write(root, "HIGH-a.md", plan_text("A", dependencies="[b]"))
    write(root, "HIGH-b.md", plan_text("B", dependencies="[c]"))
    write(root, "HIGH-c.md", plan_text("C", dependencies="[a]"))
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 1
    assert "dependency cycle: a -> b -> c -> a" in result.output
    assert result.output.count("PL062") == 1


def test_in_progress_while_a_dependency_is_not_completed_warns(root: Path, runner: CliRunner) -> None:
    write(root, "HIGH-a.md", plan_text("A", status="In Progress", dependencies="[b]"))
    write(root, "HIGH-b.md", plan_text("B", status="Planned"))
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 0
    assert "warning PL063" in result.output
    assert "b (Planned)" in result.output
    assert ("HIGH-a.md", "PL063", 3) in codes(root)
    strict = runner.invoke(main, ["validate", "--strict"])
    assert strict.exit_code == 1


def test_duplicate_dependency_warns(root: Path) -> None:
    write(root, "HIGH-a.md", plan_text("A", dependencies="[b, b]"))
    write(root, "HIGH-b.md", plan_text("B"))
    assert ("HIGH-a.md", "PL064", 7) in codes(root)


def test_unknown_key_suggests_the_known_one(root: Path, runner: CliRunner) -> None:
    write(root, "HIGH-response-caching.md", plan_text(extra="estimated_time: 2 weeks\nowners: me\n"))
    result = runner.invoke(main, ["validate"])
    assert "did you mean 'estimate'?" in result.output
    assert "did you mean 'owner'?" in result.output


def test_not_utf8_is_reported(root: Path) -> None:
    (root / "plans" / "HIGH-x.md").write_bytes(b"---\ntitle: \xff\n---\n")
    assert [c for _, c, _ in codes(root)] == ["PL002"]


def test_json_format(root: Path, runner: CliRunner) -> None:
    write(root, "HIGH-response-caching.md", plan_text(status="Done"))
    write(root, "HIGH-rate-limiting.md", plan_text("Rate Limiting"))
    result = runner.invoke(main, ["validate", "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["summary"] == {"files": 2, "errors": 1, "warnings": 0}
    (item,) = data["problems"]
    assert item == {
        "path": "plans/HIGH-response-caching.md",
        "line": 3,
        "column": 9,
        "code": "PL012",
        "severity": "error",
        "message": f"status 'Done' is not one of {ALL_STATUSES}",
        "hint": f"use one of: {ALL_STATUSES}",
    }


def test_github_format(root: Path, runner: CliRunner) -> None:
    write(root, "HIGH-response-caching.md", plan_text(status="Done"))
    result = runner.invoke(main, ["validate", "--format", "github"])
    assert result.exit_code == 1
    assert result.output.startswith(
        "::error file=plans/HIGH-response-caching.md,line=3,col=9,title=PL012::status"
    )


def test_paths_limit_the_report_but_see_the_whole_roadmap(root: Path, runner: CliRunner) -> None:
    write(root, "HIGH-a.md", plan_text("A", dependencies="[b]"))
    write(root, "HIGH-b.md", plan_text("B", status="Nope"))
    result = runner.invoke(main, ["validate", "plans/HIGH-a.md"])
    assert result.exit_code == 0, result.output
    assert "1 file(s) checked" in result.output
    whole = runner.invoke(main, ["validate", "plans"])
    assert whole.exit_code == 1


def test_usage_errors_exit_2(root: Path, runner: CliRunner) -> None:
    assert runner.invoke(main, ["validate", "--format", "xml"]).exit_code == 2
    assert runner.invoke(main, ["validate", "plans/missing.md"]).exit_code == 2
    (root / "plans").rmdir()
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 2
    assert "no plans folder" in result.output


def test_bad_config_is_a_usage_error(root: Path, runner: CliRunner) -> None:
    (root / "pyproject.toml").write_text("[tool.planner]\nlanes = 0\n")
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 2
    assert "lanes" in result.output


def test_configured_values_and_sections(root: Path, runner: CliRunner) -> None:
    (root / "pyproject.toml").write_text(
        '[tool.planner]\nstatuses = ["Idea", "Doing", "Done"]\nsections = ["Goal"]\n'
    )
    write(root, "HIGH-response-caching.md", plan_text(status="Idea", sections={"Goal": "A goal."}))
    assert runner.invoke(main, ["validate"]).exit_code == 0


@pytest.mark.parametrize("status", ["Rejected", "Withdrawn", "Deferred"])
def test_closing_states_are_valid_and_not_completed(root: Path, runner: CliRunner, status: str) -> None:
    write(root, "HIGH-response-caching.md", plan_text(status=status))
    result = runner.invoke(main, ["validate", "--strict"])
    assert result.exit_code == 0, result.output


def test_superseded_by_an_existing_plan_is_valid(root: Path, runner: CliRunner) -> None:
    write(
        root, "HIGH-response-caching.md", plan_text(status="Superseded", extra="superseded_by: smart-cache\n")
    )
    write(root, "HIGH-smart-cache.md", plan_text("Smart Cache"))
    result = runner.invoke(main, ["validate", "--strict"])
    assert result.exit_code == 0, result.output
    write(
        root, "HIGH-response-caching.md", plan_text(status="Rejected", extra="superseded_by: smart-cache\n")
    )
    assert [c for _, c, _ in codes(root)] == ["PL073"]


def test_a_closing_state_listed_after_completed_is_not_completion(root: Path, runner: CliRunner) -> None:
    # Listing the closing states in `statuses` (after Completed) once made the last one mean "completed".
    (root / "pyproject.toml").write_text(
        '[tool.planner]\nstatuses = ["Proposed", "Planned", "In Progress", "Completed", "Rejected"]\n'
    )
    write(root, "HIGH-response-caching.md", plan_text(status="Rejected"))
    result = runner.invoke(main, ["validate", "--strict"])
    assert result.exit_code == 0, result.output
    assert "still in" not in result.output
    write(root, "HIGH-response-caching.md", plan_text(status="Completed"))
    assert "PL070" in runner.invoke(main, ["validate"]).output


def test_rules_lists_every_rule(runner: CliRunner) -> None:
    result = runner.invoke(main, ["rules"])
    assert result.exit_code == 0
    for rule in RULES:
        assert rule.code in result.output
    data = json.loads(runner.invoke(main, ["rules", "--format", "json"]).output)
    assert {item["code"] for item in data} == {rule.code for rule in RULES}


def test_colour_only_on_a_terminal_and_never_with_no_color(
    root: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(root, "HIGH-response-caching.md", plan_text(status="Done"))
    plain = runner.invoke(main, ["validate"], color=True)
    assert "\x1b[" not in plain.output
    monkeypatch.setattr("planner.cli._stdout_is_terminal", lambda: True)
    coloured = runner.invoke(main, ["validate"], color=True)
    assert "\x1b[" in coloured.output
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in runner.invoke(main, ["validate"], color=True).output


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("planner, version ")


def test_readme_and_template_are_not_plans_even_when_named(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "README.md").write_text("# Conventions\n")
    (root / "plans" / "_template.md").write_text("# {{ title }}\n")
    result = runner.invoke(main, ["validate", "plans/README.md", "plans/_template.md"])
    assert result.exit_code == 0
    assert "0 file(s) checked" in result.output


def test_headings_in_code_and_deeper_levels_are_body(root: Path) -> None:
    sections = {**SECTIONS, "Design Proposal": "### Cache key\n```yaml\n## Goal\n```\nKeyed on the tenant."}
    write(root, "HIGH-response-caching.md", plan_text(sections=sections))
    assert codes(root) == []


def test_pre_commit_hook_runs_validate_on_the_changed_files(root: Path, runner: CliRunner) -> None:
    import shlex

    import yaml

    hooks = yaml.safe_load((Path(__file__).parents[2] / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "planner-validate")
    program, *args = shlex.split(hook["entry"])
    assert program == "planner" and hook["pass_filenames"]
    write(root, "HIGH-response-caching.md", plan_text(status="Done"))
    result = runner.invoke(main, [*args, "plans/HIGH-response-caching.md"])
    assert result.exit_code == 1
    assert "PL012" in result.output


def test_reference_template_as_is_reports_every_placeholder(root: Path, runner: CliRunner) -> None:
    template = (
        "# [Feature Name]\n\n**Status:** Proposed | Planned | In Progress | Completed\n"
        "**Priority:** High | Medium | Low\n"
        "**Complexity:** Simple | Moderate | Complex\n**Estimated Time:** [e.g., 2 days, 1 week, 1 month]\n"
        "**Dependencies:** [Other features needed first]\n\n## Goal\n[What are we trying to achieve?]\n"
    )
    write(root, "HIGH-feature-name.md", template)
    found = codes(root)
    assert ("HIGH-feature-name.md", "PL043", 1) in found  # the title
    assert ("HIGH-feature-name.md", "PL043", 7) in found  # the dependencies
    assert ("HIGH-feature-name.md", "PL043", 10) in found  # the Goal
    assert [ln for _, c, ln in found if c == "PL012"] == [3, 4, 5]
    assert ("HIGH-feature-name.md", "PL050", 6) in found
    result = runner.invoke(main, ["validate"])
    assert "pick one of: Proposed, Planned, In Progress, Completed" in result.output


def test_depending_on_an_unreadable_plan_is_not_also_unknown(root: Path) -> None:
    write(root, "HIGH-a.md", plan_text("A", dependencies="[b]"))
    write(root, "HIGH-b.md", "---\ntitle: [B\n---\n# B\n")
    assert [(name, code) for name, code, _ in codes(root)] == [("HIGH-b.md", "PL003")]


def test_the_template_rules_report_on_plans_template(root: Path, runner: CliRunner) -> None:
    # The cases of "PL080" and "PL081" are in test_template_checks.py; here, that validate runs them.
    (root / "plans" / "_template.md").write_text("---\ntitle: {title}\n---\n")
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 1 and "plans/_template.md:2:1: error PL080" in result.output
    (root / "plans" / "_template.md").write_text(
        "---\ntitle: {{ title }}\nstatus: {{ status }}\npriority: {{ priority }}\n"
        "complexity: {{ complexity }}\nestimate: {{ estimate }}\ndependencies: []\n---\n# {{ title }}\n"
        + "".join(f"\n## {s}\nWritten.\n" for s in SECTIONS)
    )
    assert "warning PL081" in runner.invoke(main, ["validate"]).output


def test_well_formed_tracking_metadata_passes_strict_validation(root: Path) -> None:
    extra = (
        "target: 2027-01-15\nhealth: at risk\nhealth_note: vendor quota\nhealth_date: 2026-12-01\n"
        "discussion: https://example.com/d/1\nreviewers: [ana, bo]\napprovers: [cy]\n"
        "decision_date: 2026-11-30\n"
    )
    write(root, "HIGH-response-caching.md", plan_text(extra=extra))
    result = validate(load_config(root))
    assert [p.code for p in result.problems] == []
