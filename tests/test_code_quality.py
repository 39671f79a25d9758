"""The code stays as clean as STYLE.md asks: ruff (lint and format) and mypy pass on the whole project."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Python only: ruff would otherwise also reformat the code samples inside the Markdown docs.
PYTHON_TREES = ["planner", "gateway", "tests", "bench"]


# mypy without a cache (a fresh clone) on a busy machine: longer than the suite's default timeout allows.
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "--quiet", *PYTHON_TREES],
        ["ruff", "format", "--check", "--quiet", *PYTHON_TREES],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
