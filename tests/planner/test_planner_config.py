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
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.planner]\n{toml}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)
