"""`planner status` and `planner priority`: one-line edits, renames, refusals, atomic writes."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from plan_docs import legacy_text, plan_text

from planner import edit
from planner.cli import main

TODAY = dt.date.today().isoformat()


class _Today(dt.date):
    """The date the module was imported on, whatever the clock says later: a run that crosses midnight
    must not see the commands stamp another day than the expected texts."""

    @classmethod
    def today(cls) -> _Today:
        return cls.fromisoformat(TODAY)


@pytest.fixture(autouse=True)
def _fixed_today(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edit, "dt", type("dt", (), {"date": _Today}))


@pytest.fixture
def plan(root: Path) -> Path:
    path = root / "plans" / "HIGH-response-caching.md"
    path.write_text(plan_text())
    return path


def test_status_forward_one_step_changes_only_that_line(plan: Path, runner: CliRunner) -> None:
    before = plan.read_text()
    result = runner.invoke(main, ["status", "response-caching", "Planned"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "plans/HIGH-response-caching.md: Proposed -> Planned"
    # The one line, and `updated:` (added as the front matter's last line when the plan had none).
    assert plan.read_text() == before.replace("status: Proposed\n", "status: Planned\n").replace(
        "dependencies: []\n", f"dependencies: []\nupdated: {TODAY}\n"
    )


def test_status_keeps_every_other_byte(root: Path, runner: CliRunner) -> None:
    path = root / "plans" / "HIGH-response-caching.md"
    original = plan_text().replace("status: Proposed\n", "status: 'Proposed'   # Proposed | Planned\n")
    original = original.replace("\n", "\r\n") + "  trailing   "
    path.write_bytes(original.encode())
    assert runner.invoke(main, ["status", "HIGH-response-caching", "planned"]).exit_code == 0
    expected = original.replace("status: 'Proposed'   # Proposed", "status: Planned   # Proposed")
    expected = expected.replace("dependencies: []\r\n", f"dependencies: []\r\nupdated: {TODAY}\r\n")
    assert path.read_bytes() == expected.encode()


def test_status_back_any_number_of_steps(plan: Path, runner: CliRunner) -> None:
    plan.write_text(plan_text(status="In Progress"))
    assert runner.invoke(main, ["status", "response-caching", "Proposed"]).exit_code == 0
    assert "status: Proposed\n" in plan.read_text()


def test_status_skipping_forward_needs_force(plan: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["status", "response-caching", "In Progress"])
    assert result.exit_code == 1
    assert "skips Planned" in result.output
    assert "status: Proposed\n" in plan.read_text()
    assert runner.invoke(main, ["status", "response-caching", "In Progress", "--force"]).exit_code == 0
    assert "status: In Progress\n" in plan.read_text()


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_completed_only_through_planner_complete(plan: Path, runner: CliRunner, force: list[str]) -> None:
    plan.write_text(plan_text(status="In Progress"))
    result = runner.invoke(main, ["status", "response-caching", "Completed", *force])
    assert result.exit_code == 1
    assert "planner complete response-caching" in result.output
    assert "status: In Progress\n" in plan.read_text()


def test_status_closes_and_reopens_a_plan_from_any_state(plan: Path, runner: CliRunner) -> None:
    # Closing is not a step of the lifecycle: no --force from Proposed, and back to any open state.
    result = runner.invoke(main, ["status", "response-caching", "deferred"])
    assert result.exit_code == 0, result.output
    assert "status: Deferred\n" in plan.read_text()
    assert runner.invoke(main, ["status", "response-caching", "In Progress"]).exit_code == 0
    assert runner.invoke(main, ["status", "response-caching", "Rejected"]).exit_code == 0
    assert "status: Rejected\n" in plan.read_text()
    assert runner.invoke(main, ["validate", "--strict"]).exit_code == 0


def test_superseded_names_its_successor_in_the_same_edit(plan: Path, runner: CliRunner) -> None:
    successor = plan.parent / "HIGH-semantic-caching.md"
    successor.write_text(plan_text().replace("response-caching", "semantic-caching"))
    before = plan.read_text()
    refused = runner.invoke(main, ["status", "response-caching", "Superseded"])
    assert refused.exit_code == 1 and "pass --by SLUG" in refused.output
    unknown = runner.invoke(main, ["status", "response-caching", "Superseded", "--by", "nothing-here"])
    assert unknown.exit_code == 1 and "no other plan or completed design" in unknown.output
    itself = runner.invoke(main, ["status", "response-caching", "Superseded", "--by", "response-caching"])
    assert itself.exit_code == 1
    assert plan.read_text() == before  # every refusal leaves the file as it was

    result = runner.invoke(main, ["status", "response-caching", "Superseded", "--by", "semantic-caching"])
    assert result.exit_code == 0, result.output
    assert plan.read_text() == before.replace(
        "status: Proposed\n", "status: Superseded\nsuperseded_by: semantic-caching\n"
    ).replace("dependencies: []\n", f"dependencies: []\nupdated: {TODAY}\n")
    assert runner.invoke(main, ["validate", "--strict"]).exit_code == 0


def test_status_same_value_is_a_no_op(plan: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["status", "response-caching", "Proposed"])
    assert result.exit_code == 0
    assert "already Proposed" in result.output


def test_status_bad_value_and_unknown_slug(plan: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["status", "response-caching", "Planed"])
    assert result.exit_code == 2
    assert "did you mean 'Planned'?" in result.output
    result = runner.invoke(main, ["status", "response-cashing", "Planned"])
    assert result.exit_code == 1
    assert "did you mean 'response-caching'?" in result.output


def test_status_on_a_legacy_plan(root: Path, runner: CliRunner) -> None:
    path = root / "plans" / "HIGH-response-caching.md"
    path.write_text(legacy_text())
    assert runner.invoke(main, ["status", "response-caching", "Planned"]).exit_code == 0
    assert path.read_text() == legacy_text(status="Planned")


def test_status_on_an_unreadable_plan(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-x.md").write_text("---\nstatus: [\n---\n")
    result = runner.invoke(main, ["status", "x", "Planned"])
    assert result.exit_code == 1
    assert "cannot read" in result.output


def test_priority_renames_and_updates_the_field(plan: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["priority", "response-caching", "LOW"])
    assert result.exit_code == 0, result.output
    assert "plans/HIGH-response-caching.md -> plans/LOW-response-caching.md" in result.output
    assert not plan.exists()
    moved = plan.with_name("LOW-response-caching.md")
    assert moved.read_text() == plan_text(priority="Low", extra=f"updated: {TODAY}\n")
    assert runner.invoke(main, ["validate"]).exit_code == 0


def test_priority_refuses_to_overwrite(plan: Path, runner: CliRunner) -> None:
    other = plan.with_name("LOW-response-caching.md")
    other.write_text("other")
    result = runner.invoke(main, ["priority", "HIGH-response-caching.md", "Low"])
    assert result.exit_code == 1
    assert other.read_text() == "other"
    assert plan.read_text() == plan_text()


def test_priority_bad_level(plan: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["priority", "response-caching", "Urgent"])
    assert result.exit_code == 2
    assert "use one of: High, Medium, Low" in result.output


def test_priority_unchanged(plan: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["priority", "response-caching", "high"])
    assert result.exit_code == 0
    assert "unchanged" in result.output


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_priority_uses_git_mv_in_a_work_tree(plan: Path, root: Path, runner: CliRunner) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "plans")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "plans")
    result = runner.invoke(main, ["priority", "response-caching", "Medium"])
    assert result.exit_code == 0, result.output
    staged = git("diff", "--cached", "--name-status").split()
    assert staged == ["R100", "plans/HIGH-response-caching.md", "plans/MEDIUM-response-caching.md"]
    assert "priority: Medium\n" in (root / "plans" / "MEDIUM-response-caching.md").read_text()


def test_write_atomic_keeps_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    path.write_text("old")
    path.chmod(0o640)
    edit.write_atomic(path, "new\r\n")
    assert path.read_bytes() == b"new\r\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.md"]


def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.md"
    path.write_text("old")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(edit.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        edit.write_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.md"]


def test_set_field_without_the_line(plan: Path) -> None:
    with pytest.raises(edit.EditError, match="no `owner:` line"):
        edit.set_field(plan.read_text(), "owner", "me")


def test_status_refuses_an_edit_that_would_not_read_back(plan: Path, runner: CliRunner) -> None:
    original = plan_text().replace("status: Proposed\n", "status: >\n  Proposed\n")
    plan.write_text(original)
    result = runner.invoke(main, ["status", "response-caching", "Planned"])
    assert result.exit_code == 1
    assert "cannot safely edit the status line" in result.output
    assert plan.read_text() == original


def test_status_and_priority_keep_updated_current(plan: Path, runner: CliRunner) -> None:
    plan.write_text(plan_text(extra="updated: 2020-01-02   # last review\nowner: core\n"))
    assert runner.invoke(main, ["status", "response-caching", "Planned"]).exit_code == 0
    assert f"updated: {TODAY}   # last review\nowner: core\n" in plan.read_text()
    plan.write_text(plan_text(extra="updated: 2020-01-02\n"))
    assert runner.invoke(main, ["priority", "response-caching", "Medium"]).exit_code == 0
    moved = plan.with_name("MEDIUM-response-caching.md")
    assert moved.read_text() == plan_text(priority="Medium", extra=f"updated: {TODAY}\n")
    unchanged = runner.invoke(main, ["status", "response-caching", "Proposed"])
    assert unchanged.exit_code == 0 and "already Proposed" in unchanged.output
    moved.write_text(plan_text(priority="Medium", extra="updated: 2020-01-02\n"))
    runner.invoke(main, ["priority", "response-caching", "Medium"])  # no change: no new date either
    assert "updated: 2020-01-02\n" in moved.read_text()


def test_touch_updated_in_each_form() -> None:
    day = dt.date(2026, 12, 4)
    assert (
        edit.touch_updated("---\ntitle: X\n---\n# X\n", day)
        == "---\ntitle: X\nupdated: 2026-12-04\n---\n# X\n"
    )
    assert edit.touch_updated("---\nupdated: '2020-01-01'\n---\n", day) == "---\nupdated: 2026-12-04\n---\n"
    legacy = "# X\n\n**Status:** Proposed\n**Last Updated:** 2020-01-01\n"
    assert edit.touch_updated(legacy, day) == legacy.replace("2020-01-01", "2026-12-04")
    bare = "# X\n\n**Status:** Proposed\n"
    assert edit.touch_updated(bare, day) == bare  # no front matter to add a field to
