"""Documents a new user can write by accident or on purpose: each gets a clear message, never a crash."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from plan_docs import legacy_text, plan_text

from planner.cli import main


def test_deeply_nested_front_matter_is_a_yaml_error_not_a_crash(root: Path) -> None:
    # libyaml recurses on the C stack and kills the process past a few ten thousand levels; a
    # subprocess, because a segfault would take pytest down with it.
    (root / "plans" / "HIGH-deep.md").write_text("---\ntitle: " + "[" * 60000 + "]" * 60000 + "\n---\n# x\n")
    done = subprocess.run(
        [sys.executable, "-c", "from planner.cli import main; main()", "validate"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "plans/HIGH-deep.md:2:" in done.stdout
    assert "PL003" in done.stdout and "nested" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_bad_date_is_reported_on_its_own_line(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-response-caching.md").write_text(
        plan_text(extra="owner: Ann\nupdated: 2026-13-45\n")
    )
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 1
    # Line 9: `---` and the six required keys, then `owner` and `updated`.
    assert "plans/HIGH-response-caching.md:9:1: error PL003" in result.output
    assert "month must be in 1..12" in result.output


def test_an_absurd_estimate_is_an_error_not_a_crash_of_the_site(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-response-caching.md").write_text(
        plan_text(estimate="99999999999999999999 months")
    )
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 1
    assert "plans/HIGH-response-caching.md:6:11: error PL050" in result.output
    assert "more than 5000 working days" in result.output
    rendered = runner.invoke(main, ["render", "--out", str(root / "out")])
    assert rendered.exception is None or isinstance(rendered.exception, SystemExit)
    assert rendered.exit_code == 1
    assert not (root / "out").exists()


def test_new_refuses_an_absurd_estimate(root: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["new", "HIGH-response-caching", "--estimate", "100000 weeks"])
    assert result.exit_code == 2
    assert "more than 5000 working days" in result.output
    assert not (root / "plans" / "HIGH-response-caching.md").exists()


def test_fmt_keeps_a_windows_file_s_line_endings_and_byte_order_mark(root: Path, runner: CliRunner) -> None:
    path = root / "plans" / "HIGH-response-caching.md"
    original = "\ufeff" + legacy_text().replace("\n", "\r\n")
    path.write_bytes(original.encode("utf-8"))
    result = runner.invoke(main, ["fmt"])
    assert result.exit_code == 0, result.output
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf---\r\ntitle: Response Caching\r\n")
    assert data.count(b"\n") == data.count(b"\r\n")
    assert runner.invoke(main, ["validate", "--strict"]).exit_code == 0
    assert runner.invoke(main, ["fmt", "--check"]).exit_code == 0
    assert path.read_bytes() == data


def test_new_refuses_an_empty_or_multi_line_title(root: Path, runner: CliRunner) -> None:
    for title, words in (("  ", "the title is empty"), ("Response\nCaching", "spans several lines")):
        result = runner.invoke(main, ["new", "HIGH-response-caching", "--title", title])
        assert result.exit_code == 2
        assert words in result.output
        assert not (root / "plans" / "HIGH-response-caching.md").exists()
    made = runner.invoke(main, ["new", "HIGH-response-caching", "--title", "  Response Caching "])
    assert made.exit_code == 0
    assert "title: Response Caching\n" in (root / "plans" / "HIGH-response-caching.md").read_text()


def test_status_and_priority_name_a_file_that_is_not_text(root: Path, runner: CliRunner) -> None:
    path = root / "plans" / "HIGH-response-caching.md"
    path.write_bytes(b"\xa5\x00\xff binary")
    for args in (["status", "response-caching", "Planned"], ["priority", "response-caching", "Low"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, result.output
        assert "cannot read plans/HIGH-response-caching.md: not UTF-8 text" in result.output
        assert "Invalid value" not in result.output
    assert path.read_bytes() == b"\xa5\x00\xff binary"


def test_complete_says_a_plan_it_cannot_read_exists(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-response-caching.md").write_text("---\ntitle: T\n  status: x\n---\n# T\n")
    evidence = '{"version": 1, "features": {"response-caching": {"passed": 1, "failed": 0, "skipped": 0}}}'
    (root / ".planner").mkdir()
    (root / ".planner" / "evidence.json").write_text(evidence)
    result = runner.invoke(main, ["complete", "response-caching"])
    assert result.exit_code == 1
    assert "plans/HIGH-response-caching.md cannot be read as a plan" in result.output
    assert "no plan" not in result.output


def test_render_into_a_place_it_cannot_write_is_a_message(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-response-caching.md").write_text(plan_text())
    (root / "a-file").write_text("not a folder")
    result = runner.invoke(main, ["render", "--out", str(root / "a-file" / "out")])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "cannot write the pages to" in result.output and "a-file" in result.output


def test_new_into_a_plans_path_that_is_a_file(root: Path, runner: CliRunner) -> None:
    (root / "plans").rmdir()
    (root / "plans").write_text("not a folder")
    result = runner.invoke(main, ["new", "HIGH-response-caching"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "cannot write plans/HIGH-response-caching.md: plans is not a folder" in result.output


def test_a_full_disk_is_a_message_and_the_plan_is_left_whole(
    root: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = root / "plans" / "HIGH-response-caching.md"
    path.write_text(plan_text())

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("planner.edit.os.fsync", full)
    result = runner.invoke(main, ["status", "response-caching", "Planned"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "No space left on device: plans/HIGH-response-caching.md" in result.output
    assert path.read_text() == plan_text()
    assert sorted(p.name for p in (root / "plans").iterdir()) == ["HIGH-response-caching.md"]


def test_a_mistyped_dependency_at_the_prompt_is_asked_again(
    root: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("planner.cli._stdin_is_terminal", lambda: True)
    (root / "plans" / "HIGH-rate-limiting.md").write_text(plan_text("Rate Limiting"))
    answers = "My Title\nSimple\n2 weeks\nrate-limitng\nrate-limiting\n"
    result = runner.invoke(main, ["new", "LOW-thing"], input=answers)
    assert result.exit_code == 0, result.output
    assert "unknown dependency 'rate-limitng'; did you mean 'rate-limiting'?" in result.output
    text = (root / "plans" / "LOW-thing.md").read_text()
    assert "title: My Title\n" in text and "dependencies: [rate-limiting]\n" in text


def test_commands_on_a_completed_feature_point_to_its_design(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-rate-limiting.md").write_text(plan_text("Rate Limiting"))
    (root / "docs" / "design").mkdir(parents=True)
    (root / "docs" / "design" / "response-caching.md").write_text("# Response Caching\n\nDone.\n")
    result = runner.invoke(main, ["status", "response-caching", "Planned"])
    assert result.exit_code == 1
    assert "'response-caching' is completed" in result.output
    assert "docs/design/response-caching.md" in result.output
    shown = runner.invoke(main, ["show", "response-caching"])  # closed work stays visible
    assert shown.exit_code == 0, shown.output
    assert "status:     Completed (design page)" in shown.output
    assert "path:       docs/design/response-caching.md" in shown.output


def test_legacy_metadata_below_an_intro_paragraph_is_read_and_kept_by_fmt(
    root: Path, runner: CliRunner
) -> None:
    legacy = legacy_text().replace(
        "# Response Caching\n\n", "# Response Caching\n\n> Serve repeats fast.\n\n", 1
    )
    path = root / "plans" / "HIGH-response-caching.md"
    path.write_text(legacy)
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 0, result.output
    assert "PL005" not in result.output and "0 warning(s)" in result.output
    assert runner.invoke(main, ["fmt"]).exit_code == 0
    text = path.read_text()
    assert text.startswith("---\ntitle: Response Caching\nstatus: Proposed\n")
    assert "---\n# Response Caching\n\n> Serve repeats fast.\n\n## Goal\n" in text
    assert "**Status:**" not in text
    assert runner.invoke(main, ["validate", "--strict"]).exit_code == 0


def test_a_plan_named_twice_is_checked_once_not_a_duplicate_of_itself(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-response-caching.md").write_text(plan_text())
    result = runner.invoke(
        main, ["validate", "plans", "plans/HIGH-response-caching.md", "./plans/HIGH-response-caching.md"]
    )
    assert result.exit_code == 0, result.output
    assert "PL020" not in result.output
    assert "1 file(s) checked: 0 error(s)" in result.output


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            b'{% include "missing.md" %}',
            "plans/_template.md line 1: the included template 'missing.md' is not in plans/",
        ),
        (b"\xff\xfe{{ title }}", "plans/_template.md: not UTF-8 text"),
    ],
)
def test_a_broken_project_template_is_a_message(
    root: Path, runner: CliRunner, template: bytes, message: str
) -> None:
    (root / "plans" / "_template.md").write_bytes(template)
    result = runner.invoke(main, ["new", "HIGH-response-caching"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.output
    assert not (root / "plans" / "HIGH-response-caching.md").exists()


def test_the_project_template_can_include_a_file_next_to_it(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "sections.j2").write_text("## Goal\nFor {{ title }}.\n")
    (root / "plans" / "_template.md").write_text(
        "---\ntitle: {{ title }}\n---\n# {{ title }}\n\n{% include 'sections.j2' %}"
    )
    result = runner.invoke(main, ["new", "HIGH-response-caching"])
    assert result.exit_code == 0, result.output
    assert "## Goal\nFor Response Caching.\n" in (root / "plans" / "HIGH-response-caching.md").read_text()


@pytest.mark.parametrize(
    ("pyproject", "message"),
    [
        (b"\xff\xfe[project]\n", "pyproject.toml: not UTF-8 text"),
        (b"[tool]\nplanner = 3\n", "pyproject.toml: [tool.planner] must be a table, not int"),
    ],
)
def test_a_pyproject_that_cannot_configure_planner_is_a_usage_error(
    root: Path, runner: CliRunner, pyproject: bytes, message: str
) -> None:
    (root / "pyproject.toml").write_bytes(pyproject)
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.output


def test_evidence_missing_a_count_names_the_key(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-response-caching.md").write_text(plan_text())
    (root / ".planner").mkdir()
    evidence = '{"version": 1, "generated_at": "x", "features": {"response-caching": {"passed": 1}}}'
    (root / ".planner" / "evidence.json").write_text(evidence)
    result = runner.invoke(main, ["track", "--no-run"])
    assert result.exit_code == 1
    assert "not a readable evidence file (missing key 'failed')" in result.output


def test_fmt_keeps_the_unanswered_dependencies_placeholder_as_a_to_do(root: Path, runner: CliRunner) -> None:
    path = root / "plans" / "HIGH-response-caching.md"
    path.write_text(legacy_text(dependencies="[Other features needed first]"))
    before = runner.invoke(main, ["validate"])
    assert "PL043 dependencies still hold the template placeholder" in before.output
    assert runner.invoke(main, ["fmt"]).exit_code == 0
    assert "dependencies: '[Other features needed first]'\n" in path.read_text()
    after = runner.invoke(main, ["validate"])
    assert after.exit_code == 1
    assert "PL043 dependencies still hold the template placeholder" in after.output


def test_track_with_a_malformed_gateway_url_is_a_message(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-response-caching.md").write_text(plan_text())
    (root / "tests" / "acceptance").mkdir(parents=True)
    result = runner.invoke(main, ["track", "--gateway-url", "http://[::1", "--gateway-key", "k"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "cannot reach the gateway at http://[::1" in result.output
