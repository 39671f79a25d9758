from pathlib import Path

import pytest

from planner.config import ConfigError, load_config


def test_defaults_without_pyproject(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.statuses == ("Proposed", "Planned", "In Progress", "Completed")
    assert config.units == {"day": 1.0, "week": 5.0, "month": 20.0}
    assert config.plans_path == tmp_path.resolve() / "plans"


def test_overrides_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.planner]\nlanes = 3\nunits = {day = 1, week = 4}\n")
    config = load_config(tmp_path)
    assert config.lanes == 3
    assert config.units == {"day": 1.0, "week": 4.0}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("lanes = 0", "lanes"),
        ('statuses = "Proposed"', "statuses"),
        ("colour = true", r"unknown key\(s\): colour"),
        ("closed_statuses = [1]", "closed_statuses"),
        ('statuses = ["Rejected"]', "not a closing state"),
        ('priority_labels = {Urgent = "now"}', r"priority_labels: Urgent is not a configured priority"),
        ("priority_labels = {High = 1}", "priority_labels: expected text"),
        ('readiness = {priorities = ["Someday"]}', r"readiness\] priorities: .*not configured: Someday"),
        ('readiness = {title = ""}', r"readiness\] title"),
        ("readiness = {colour = 1}", r"readiness\] unknown key\(s\): colour"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.planner]\n{toml}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)


def test_closing_states_are_configurable_and_never_the_lifecycle(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.closed_statuses == ("Rejected", "Withdrawn", "Deferred", "Superseded")
    assert config.completed_status == "Completed" and config.in_progress_status == "In Progress"
    (tmp_path / "pyproject.toml").write_text(
        '[tool.planner]\nstatuses = ["Idea", "Doing", "Done", "Dropped"]\nclosed_statuses = ["Dropped"]\n'
    )
    config = load_config(tmp_path)
    assert config.lifecycle == ("Idea", "Doing", "Done")
    assert (config.completed_status, config.in_progress_status) == ("Done", "Doing")
    assert config.all_statuses == ("Idea", "Doing", "Done", "Dropped")
    assert config.is_closed("Dropped") and not config.is_closed("Done")


def test_priority_labels_and_readiness(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.planner.priority_labels]\nHigh = "must ship"\n'
        '[tool.planner.readiness]\ntitle = "Launch"\npriorities = ["High"]\n'
    )
    config = load_config(tmp_path)
    assert config.priority_labels == {"High": "must ship"}
    assert (config.readiness.title, config.readiness_priorities) == ("Launch", ("High",))
    (tmp_path / "pyproject.toml").write_text("[tool.planner]\nreadiness = false\n")
    assert load_config(tmp_path).readiness_priorities == ()
    (tmp_path / "pyproject.toml").write_text("[tool.planner]\n")
    assert load_config(tmp_path).readiness_priorities == ("High", "Medium")  # the two most urgent
