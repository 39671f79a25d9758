"""The parser on arbitrary input: diagnostics, never an exception."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plan_docs import SECTIONS

from planner.config import PlannerConfig
from planner.parse import parse_plan
from planner.rulebook import RULE_BY_CODE

CONFIG = PlannerConfig(root=Path("/nonexistent"))
PATH = Path("HIGH-response-caching.md")

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | st.dates()
)
yaml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
keys = st.sampled_from(
    ["title", "status", "priority", "complexity", "estimate", "dependencies", "feature", "owner", "updated"]
) | st.text(max_size=10)


def check(problems: list, plan: object) -> None:
    for found in problems:
        assert found.code in RULE_BY_CODE
        assert found.severity == RULE_BY_CODE[found.code].severity
        assert found.message and found.hint
        assert found.line is None or found.line >= 1
        assert found.column is None or found.column >= 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    plan, problems = parse_plan(PATH, text, CONFIG)
    check(problems, plan)
    if plan is None:
        assert any(p.severity == "error" for p in problems)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_front_matter_text(front: str) -> None:
    plan, problems = parse_plan(PATH, f"---\n{front}\n---\n# Response Caching\n", CONFIG)
    check(problems, plan)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, yaml_values, max_size=8), st.booleans())
def test_arbitrary_front_matter_values(data: dict, with_sections: bool) -> None:
    front = yaml.safe_dump(data, allow_unicode=True)
    body = "".join(f"## {name}\n{text}\n" for name, text in SECTIONS.items()) if with_sections else ""
    plan, problems = parse_plan(PATH, f"---\n{front}---\n# Response Caching\n{body}", CONFIG)
    check(problems, plan)
    assert plan is not None  # a mapping always gives a plan, however wrong its values


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["# T", "## Goal", "**Status:** x", "```", "---", "text", "", "## Goal", "- [x]"]),
        max_size=20,
    )
)
def test_arbitrary_structure(lines: list[str]) -> None:
    plan, problems = parse_plan(PATH, "\n".join(lines), CONFIG)
    check(problems, plan)


def test_yaml_that_constructs_badly_is_a_problem() -> None:
    for front in ("updated: 2024-13-45", "? [a, b]\n: c", "a: !!python/object:os.system x"):
        plan, problems = parse_plan(PATH, f"---\n{front}\n---\n# T\n", CONFIG)
        check(problems, plan)
        assert plan is None, front
        assert [(p.code, p.line) for p in problems] == [("PL003", 2)], (front, problems)
        assert problems[0].message.startswith("front matter is not valid YAML: "), front
    # A list that contains itself is valid YAML: it reads, and the unknown key is reported, not a crash.
    plan, problems = parse_plan(PATH, "---\na: &x [*x]\n---\n# T\n", CONFIG)
    check(problems, plan)
    assert plan is not None
    assert ("PL014", 2) in [(p.code, p.line) for p in problems]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["title", "status", "dependencies", "yes", "a-b"]),
            st.text(alphabet="abcXYZ019 .-_~/(),'?!&%=:#[]\"", max_size=12)
            | st.from_regex(r"\A\d{4}-\d\d-\d\d\Z"),
        ),
        max_size=5,
    )
)
def test_fast_front_matter_reads_what_yaml_reads(pairs: list[tuple[str, str]]) -> None:
    """Front matter read without the YAML parser must mean exactly what YAML says it means."""
    from planner.metadata import simple_front_matter

    lines = ["---", *(f"{key}: {value}" for key, value in pairs), "---"]
    fields = simple_front_matter(lines, len(lines) - 1)
    if fields is None:
        return  # left to the YAML parser
    assert {key: fld.value for key, fld in fields.items()} == (yaml.safe_load("\n".join(lines[1:-1])) or {})


def line_by_line(text: str) -> tuple[str | None, list[tuple[str, int]]]:
    """A plain reference reading of the H1 and `##` headings, skipping fenced code."""
    h1, heads, fence = None, [], ""
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.lstrip(" ")
        if stripped[:3] in ("```", "~~~") and len(line) - len(stripped) <= 3:
            fence = stripped[:3] if not fence else ("" if stripped[:3] == fence else fence)
        elif fence:
            continue
        elif line.startswith("## ") or line.rstrip() == "##":
            heads.append((line[2:].strip().rstrip("#").strip(), number))
        elif h1 is None and not heads and (line.startswith("# ") or line.rstrip() == "#"):
            h1 = line[1:].strip().rstrip("#").strip()
    return h1, heads


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "# T",
                "## Goal",
                "## Open Questions ##",
                "### Sub",
                "```",
                "```py",
                "~~~",
                "   ```",
                "    ```",
                "text ``` inline",
                "#",
                "##",
                "#no-space",
                "",
                "- item",
                "  ## indented",
            ]
        ),
        max_size=25,
    )
)
def test_heading_scan_matches_a_line_by_line_reading(lines: list[str]) -> None:
    body = "\n".join(lines)
    plan, _ = parse_plan(PATH, f"---\ntitle: T\n---\n{body}", CONFIG)
    assert plan is not None
    h1, heads = line_by_line(body)
    assert plan.h1 == h1
    assert [(s.title, s.line - 3) for s in plan.sections] == heads


def test_headings_inside_fenced_code_are_not_sections() -> None:
    body = "# T\n\n## Goal\n```md\n## Goal\n# Other\n```\nReal.\n"
    plan, problems = parse_plan(PATH, f"---\ntitle: T\n---\n{body}", CONFIG)
    assert plan is not None
    assert [s.title for s in plan.sections] == ["Goal"]
    assert "PL044" not in {p.code for p in problems}
