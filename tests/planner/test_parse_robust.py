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
    for front in ("updated: 2024-13-45", "? [a, b]\n: c", "a: !!python/object:os.system x", "a: &x [*x]"):
        plan, problems = parse_plan(PATH, f"---\n{front}\n---\n# T\n", CONFIG)
        check(problems, plan)


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
    from planner.parse import _simple_front_matter

    lines = ["---", *(f"{key}: {value}" for key, value in pairs), "---"]
    fields = _simple_front_matter(lines, len(lines) - 1)
    if fields is None:
        return  # left to the YAML parser
    assert {key: fld.value for key, fld in fields.items()} == (yaml.safe_load("\n".join(lines[1:-1])) or {})
