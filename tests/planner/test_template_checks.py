"""A project's plans/_template.md: jinja2 with documented variables, checked by `planner new` and by
`planner validate`, every problem naming the file and line (issue 13)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import main
from planner.config import load_config
from planner.plan_template import VARIABLES, check_template
from planner.starter import init_project

REPO = Path(__file__).resolve().parents[2]
GOOD = """---
title: {{ title | yaml }}
status: {{ status | yaml }}
priority: {{ priority | yaml }}
complexity: {{ complexity | yaml }}
estimate: {{ estimate | yaml }}
dependencies: {{ dependencies | yaml }}
updated: {{ today }}
---
# {{ title }}
{% for section in sections %}
## {{ section.title }}
{{ section.placeholder }}
{% endfor %}
"""


def write_template(root: Path, text: str) -> None:
    (root / "plans" / "_template.md").write_text(text, encoding="utf-8")


def test_a_good_template_gets_every_documented_variable(root: Path, runner: CliRunner) -> None:
    write_template(root, GOOD)
    assert check_template(load_config(root)) == []
    assert runner.invoke(main, ["new", "HIGH-x"]).exit_code == 0
    assert f"updated: {dt.date.today().isoformat()}\n" in (root / "plans" / "HIGH-x.md").read_text()
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("# {{ title }}", "# {title}"), 10, "{title} is a Python format field, written out literally"),
        (("{{ today }}", "{{ todya }}"), 8, "unknown variable 'todya'; did you mean 'today'?"),
        (("{{ section.placeholder }}", "{{ section.prompt }}"), 13, "has no attribute 'prompt'"),
        (("{% endfor %}", ""), 13, "Unexpected end of template"),
    ],
)
def test_a_broken_template_names_its_file_and_line(
    root: Path, runner: CliRunner, change: tuple[str, str], line: int, message: str
) -> None:
    write_template(root, GOOD.replace(*change))
    created = runner.invoke(main, ["new", "HIGH-x"])
    assert created.exit_code == 1
    assert re.search(rf"plans/_template\.md line {line}: .*{re.escape(message)}", created.output), (
        created.output
    )
    assert not (root / "plans" / "HIGH-x.md").exists()
    validated = runner.invoke(main, ["validate"])
    assert validated.exit_code == 1
    assert f"plans/_template.md:{line}:1: error PL080" in validated.output and message in validated.output


def test_a_template_rendering_into_an_invalid_plan_is_an_error(root: Path, runner: CliRunner) -> None:
    write_template(root, GOOD.replace("estimate: {{ estimate | yaml }}", "estimate: soon"))
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 1
    assert (
        "plans/_template.md:6:1: error PL080 rendered with sample values, it is not a valid plan"
        in result.output
    )


def test_prefilled_sections_of_a_template_are_reported(root: Path, runner: CliRunner) -> None:
    # A custom template whose prompts read as content: plans made from it would pass unfilled.
    body = "\n".join(
        f"## {title}\n{text}\n"
        for title, text in {
            "Goal": "Describe the goal.",
            "User Benefit": "TODO",
            "Design Proposal": "[How?]",
            "Implementation Steps": "1. ?",
            "Open Questions": "-",
            "Alternatives Considered": "<!-- what else -->",
        }.items()
    )
    write_template(root, GOOD.split("{% for")[0] + "\n" + body)
    found = [(p.code, p.line) for p in check_template(load_config(root))]
    assert found == [("PL081", 12)]  # only Goal: TODO, ?, -, comments and [prompts] are seen as unfilled
    assert runner.invoke(main, ["validate"]).exit_code == 0
    assert runner.invoke(main, ["validate", "--strict"]).exit_code == 1


def test_the_starter_template_is_clean(tmp_path: Path) -> None:
    init_project(tmp_path)
    assert check_template(load_config(tmp_path)) == []


def test_the_docs_list_every_template_variable() -> None:
    page = (REPO / "docs" / "planner" / "templates.md").read_text(encoding="utf-8")
    for name in VARIABLES:
        assert f"| `{name}` |" in page, name
    assert "  - Planner reference: planner/\n" in (REPO / "mkdocs.yml").read_text(encoding="utf-8")
