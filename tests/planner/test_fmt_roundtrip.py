"""`planner fmt`: legacy to canonical without losing a word, idempotent, and `--check`."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_docs import SECTIONS, legacy_text, plan_text

from planner.cli import main
from planner.config import PlannerConfig
from planner.fmt import format_text
from planner.parse import parse_plan

REFERENCE = """# Response Caching

**Status:** Proposed
**Priority:** High
**Complexity:** Moderate
**Estimated Time:** 3-5 days
**Dependencies:** [Usage Tracking](MEDIUM-usage-tracking-analytics.md), rate limiting
**Owner:** @alice
**Target Release:** v2: the big one

Some words before the first section stay too.

## Goal
Serve repeated prompts from a cache.

## User Benefit
Lower cost.

## Design Proposal
Key on tenant and prompt.

```python
# not a heading
```

## Implementation Steps
1. Cache stage.

## Open Questions
- TTL?

## Alternatives Considered
None worth it.
"""


def words(text: str) -> Counter[str]:
    return Counter(w.lower() for w in re.findall(r"[A-Za-z0-9]+", text))


def test_fmt_rewrites_legacy_losing_no_words(root: Path, runner: CliRunner) -> None:
    path = root / "plans" / "HIGH-response-caching.md"
    path.write_text(REFERENCE)
    result = runner.invoke(main, ["fmt"])
    assert result.exit_code == 0, result.output
    assert "reformatted plans/HIGH-response-caching.md" in result.output
    text = path.read_text()
    assert text.startswith(
        "---\ntitle: Response Caching\nstatus: Proposed\npriority: High\ncomplexity: Moderate\n"
        "estimate: 3-5 days\ndependencies: [usage-tracking-analytics, rate-limiting]"
    )
    assert "owner: '@alice'\ntarget_release: 'v2: the big one'\n---\n# Response Caching\n\nSome words" in text
    # Labels are renamed to keys (`Estimated Time` -> `estimate`); every other word must survive.
    missing = words(REFERENCE.replace("Estimated Time", "Estimate")) - words(text)
    assert not missing, missing
    plan, _ = parse_plan(path, text, PlannerConfig(root=root))
    assert plan is not None and not plan.legacy
    assert plan.extra == {"target_release": "v2: the big one"}
    assert [s.title for s in plan.sections] == list(SECTIONS)
    again = runner.invoke(main, ["fmt", "--check"])
    assert again.exit_code == 0
    assert "0 file(s) would be reformatted" in again.output


def test_check_lists_files_and_changes_nothing(root: Path, runner: CliRunner) -> None:
    legacy = root / "plans" / "HIGH-response-caching.md"
    legacy.write_text(legacy_text())
    (root / "plans" / "HIGH-rate-limiting.md").write_text(plan_text("Rate Limiting"))
    result = runner.invoke(main, ["fmt", "--check"])
    assert result.exit_code == 1
    assert "would reformat plans/HIGH-response-caching.md" in result.output
    assert "rate-limiting" not in result.output.split("\n")[0]
    assert legacy.read_text() == legacy_text()


def test_the_reference_template_form_is_valid_and_fmt_keeps_it_valid(root: Path, runner: CliRunner) -> None:
    (root / "plans" / "HIGH-response-caching.md").write_text(legacy_text())
    # The reference template's bold-field form is first class: valid under --strict as written.
    as_written = runner.invoke(main, ["validate", "--strict"])
    assert as_written.exit_code == 0 and "0 warning(s)" in as_written.output, as_written.output
    assert runner.invoke(main, ["fmt", "plans/HIGH-response-caching.md"]).exit_code == 0
    result = runner.invoke(main, ["validate", "--strict"])
    assert result.exit_code == 0, result.output


def test_fmt_skips_unreadable_files(root: Path, runner: CliRunner) -> None:
    broken = "---\ntitle: [\n---\n"
    (root / "plans" / "HIGH-x.md").write_text(broken)
    result = runner.invoke(main, ["fmt"])
    assert result.exit_code == 1
    assert "skipped plans/HIGH-x.md" in result.output
    assert (root / "plans" / "HIGH-x.md").read_text() == broken


def test_canonical_files_are_left_alone(tmp_path: Path) -> None:
    text = plan_text().replace("status: Proposed", "status: Proposed   # a comment")
    assert format_text(tmp_path / "HIGH-response-caching.md", text, PlannerConfig(root=tmp_path))[0] == text


values = (
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=30)
    .map(str.strip)
    .filter(lambda v: v and "\n" not in v and "*" not in v)
)


@settings(max_examples=150, deadline=None)
@given(
    status=values,
    estimate=values,
    owner=values,
    extra=values,
    body=st.text(max_size=200),
)
def test_round_trip_keeps_metadata_and_is_idempotent(
    status: str, estimate: str, owner: str, extra: str, body: str
) -> None:
    config = PlannerConfig(root=Path("/nonexistent"))
    path = Path("HIGH-response-caching.md")
    legacy = (
        f"# Response Caching\n\n**Status:** {status}\n**Priority:** High\n**Complexity:** Moderate\n"
        f"**Estimated Time:** {estimate}\n**Dependencies:** None\n**Owner:** {owner}\n"
        f"**Custom Note:** {extra}\n\n"
        f"## Goal\n{body}\n"
    )
    before, _ = parse_plan(path, legacy, config)
    assert before is not None and before.legacy
    once, _ = format_text(path, legacy, config)
    twice, _ = format_text(path, once, config)
    assert twice == once
    after, _ = parse_plan(path, once, config)
    assert after is not None and not after.legacy
    for field in ("title", "status", "priority", "complexity", "estimate_text", "dependencies", "owner"):
        assert getattr(after, field) == getattr(before, field), field
    assert [(s.title, s.body) for s in after.sections] == [(s.title, s.body) for s in before.sections]
    assert after.extra == {"custom_note": extra}


def test_legacy_dependency_spellings(tmp_path: Path) -> None:
    config = PlannerConfig(root=tmp_path)
    base = (
        "# Caching\n\n**Status:** Proposed\n**Priority:** High\n**Complexity:** Simple\n"
        "**Estimated Time:** 2 days\n"
    )
    cases = {
        "Dependencies: rate-limiting, usage-tracking": ("rate-limiting", "usage-tracking"),
        "**Dependencies:** None": (),
        "**Dependencies**: Rate Limiting and more": ("rate-limiting-and-more",),
        "- **Dependencies:** [Admin](LOW-admin-api.md)": ("admin-api",),
        "Dependencies: [Other features needed first]": (),
    }
    for line, expected in cases.items():
        plan, _ = parse_plan(tmp_path / "HIGH-caching.md", base + line + "\n\n## Goal\nx\n", config)
        assert plan is not None and plan.legacy, line
        assert plan.dependencies == expected, line
