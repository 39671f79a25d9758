"""The project root: the planner config first, then mkdocs.yml, .git, pyproject.toml (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.config import ConfigError, find_root, load_config


def test_each_marker_is_looked_for_all_the_way_up_before_the_next(tmp_path: Path) -> None:
    project = tmp_path / "project"
    deep = project / "pkg" / "plans"
    deep.mkdir(parents=True)
    (project / "pkg" / "pyproject.toml").write_text('[project]\nname = "sub"\n')
    assert find_root(deep) == project / "pkg"  # only a pyproject.toml: the nearest one
    (project / ".git").mkdir()
    assert find_root(deep) == project  # .git beats a nearer pyproject.toml
    (project / "pkg" / "mkdocs.yml").write_text("site_name: x\n")
    assert find_root(deep) == project / "pkg"  # mkdocs.yml beats .git
    (project / "planner.toml").write_text("lanes = 3\n")
    assert find_root(deep) == project  # the planner config beats everything
    assert load_config(find_root(deep)).lanes == 3


def test_a_worktree_git_file_marks_the_root(tmp_path: Path) -> None:
    (tmp_path / ".git").write_text("gitdir: /elsewhere\n")
    (tmp_path / "plans").mkdir()
    assert find_root(tmp_path / "plans") == tmp_path


def test_pyproject_counts_as_planner_config_only_with_its_table(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "mkdocs.yml").write_text("site_name: x\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[project.entry-points.x]\nplanner = "y"\n'
    )
    assert find_root(sub) == sub
    (tmp_path / "pyproject.toml").write_text("[tool.planner]\nlanes = 4\n")
    assert find_root(sub) == tmp_path
    assert load_config(tmp_path).lanes == 4


def test_planner_toml_wins_over_pyproject_and_names_itself_in_errors(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.planner]\nlanes = 4\n")
    (tmp_path / ".planner.toml").write_text("lanes = 5\n")
    assert load_config(tmp_path).lanes == 5
    (tmp_path / "planner.toml").write_text('plans_dir = "roadmap"\nlanes = 0\n')
    with pytest.raises(ConfigError, match=r"^planner\.toml: lanes: expected a whole number"):
        load_config(tmp_path)
    (tmp_path / "planner.toml").write_text("lanes = [\n")
    with pytest.raises(ConfigError, match=r"planner\.toml"):
        load_config(tmp_path)


def test_new_from_a_subfolder_writes_into_the_roots_plans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The example: `cd other/plans && planner new LOW-sub` wrote plans/plans/LOW-sub.md.
    other = tmp_path / "other"
    (other / ".git").mkdir(parents=True)
    (other / "plans").mkdir()
    monkeypatch.chdir(other / "plans")
    result = CliRunner().invoke(main, ["new", "LOW-sub"])
    assert result.exit_code == 0, result.output
    assert (other / "plans" / "LOW-sub.md").is_file()
    assert not (other / "plans" / "plans").exists()
