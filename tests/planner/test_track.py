"""`planner track`: every verdict rule of `judge`, the table, and the command end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.evidence import Evidence, FeatureEvidence, RecordedTest
from planner.model import Design, Plan
from planner.track import FeatureVerdict, format_table, judge


def plan(slug: str, status: str, feature: str | None = None) -> Plan:
    return Plan(
        path=Path(f"plans/HIGH-{slug}.md"),
        slug=slug,
        file_priority="High",
        title=slug.title(),
        status=status,
        priority="High",
        complexity="Simple",
        estimate=None,
        estimate_text="1 week",
        dependencies=(),
        feature=feature or slug,
        owner=None,
        updated=None,
        h1=None,
        sections=(),
        body="",
        legacy=False,
    )


def design(slug: str) -> Design:
    return Design(path=Path(f"docs/design/{slug}.md"), slug=slug, title=slug.title(), feature=slug)


def ran(slug: str, passed: int = 0, failed: int = 0, skipped: int = 0) -> FeatureEvidence:
    recorded = [
        RecordedTest(f"tests/acceptance/test_{slug}.py::test_ok_{i}", "passed") for i in range(passed)
    ]
    recorded += [
        RecordedTest(f"tests/acceptance/test_{slug}.py::test_bad_{i}", "failed") for i in range(failed)
    ]
    recorded += [
        RecordedTest(f"tests/acceptance/test_{slug}.py::test_skip_{i}", "skipped") for i in range(skipped)
    ]
    return FeatureEvidence(passed, failed, skipped, tuple(recorded))


def evidence(
    features: dict[str, FeatureEvidence] | None = None,
    reported: dict[str, bool] | None = None,
    url: str | None = None,
) -> Evidence:
    return Evidence("2026-11-26T04:00:00+00:00", "abc123", "0.1.0", url, features or {}, reported)


def only(plans: list[Plan], designs: list[Design], ev: Evidence, slug: str) -> FeatureVerdict:
    rows = {row.slug: row for row in judge(plans, designs, ev).features}
    return rows[slug]


def test_completed_with_a_failing_test_is_an_error_naming_it() -> None:
    row = only([plan("caching", "Completed")], [], evidence({"caching": ran("caching", 2, 1)}), "caching")
    assert row.verdict == "error"
    assert "marked Completed" in row.message and "test_caching.py::test_bad_0" in row.message
    assert (row.passed, row.failed) == (2, 1)


@pytest.mark.parametrize("fe", [None, ran("caching", skipped=2)])
def test_completed_without_a_test_that_ran_is_an_error(fe: FeatureEvidence | None) -> None:
    ev = evidence({"caching": fe} if fe else {})
    row = only([plan("caching", "Completed")], [], ev, "caching")
    assert row.verdict == "error" and "no acceptance test of `caching` ran" in row.message
    assert row.progress is None


def test_completed_and_green_is_ok_and_points_to_complete() -> None:
    row = only([plan("caching", "Completed")], [], evidence({"caching": ran("caching", 3)}), "caching")
    assert row.verdict == "ok" and "planner complete caching" in row.message and row.progress == 1.0


def test_a_completed_design_that_fails_is_a_regression() -> None:
    row = only([], [design("caching")], evidence({"caching": ran("caching", 1, 1)}), "caching")
    assert (row.verdict, row.status) == ("error", "Completed")
    assert row.message.startswith("regression: 1 of 2 acceptance tests fail")


def test_a_completed_design_without_tests_is_a_regression() -> None:
    row = only([], [design("caching")], evidence(), "caching")
    assert row.verdict == "error" and row.message.startswith("regression")


def test_a_completed_design_that_passes_is_ok() -> None:
    row = only([], [design("caching")], evidence({"caching": ran("caching", 2)}), "caching")
    assert row.verdict == "ok" and row.message == "2 of 2 acceptance tests passing"


def test_in_progress_reports_progress() -> None:
    row = only(
        [plan("caching", "In Progress")], [], evidence({"caching": ran("caching", 3, 1, 1)}), "caching"
    )
    assert row.verdict == "info" and row.progress == pytest.approx(0.75)
    assert row.message == "3 of 4 acceptance tests passing (1 skipped)"
    empty = only([plan("caching", "In Progress")], [], evidence(), "caching")
    assert empty.verdict == "info" and empty.progress is None


@pytest.mark.parametrize("status", ["Proposed", "Planned"])
def test_not_started_but_all_green_is_ahead_of_its_plan(status: str) -> None:
    row = only([plan("caching", status)], [], evidence({"caching": ran("caching", 2)}), "caching")
    assert row.verdict == "warning" and "implemented ahead of its plan" in row.message


@pytest.mark.parametrize("fe", [None, ran("caching", 1, 1)])
def test_not_started_and_not_green_is_fine(fe: FeatureEvidence | None) -> None:
    row = only([plan("caching", "Planned")], [], evidence({"caching": fe} if fe else {}), "caching")
    assert row.verdict == "ok"


def test_tests_without_a_plan_are_a_warning() -> None:
    row = only([], [], evidence({"orphan": ran("orphan", 1)}), "orphan")
    assert (row.verdict, row.status) == ("warning", None) and "no plan or design" in row.message


def test_reported_by_the_gateway_without_a_plan_is_a_warning() -> None:
    row = only([], [], evidence(reported={"secret-feature": True}), "secret-feature")
    assert row.verdict == "warning" and "the gateway reports this feature" in row.message


def test_verified_but_not_reported_by_a_live_gateway_is_an_error() -> None:
    ev = evidence({"caching": ran("caching", 2)}, reported={"other": True}, url="http://127.0.0.1:9")
    row = only([plan("caching", "In Progress")], [], ev, "caching")
    assert row.verdict == "error" and "does not report `caching` in /admin/features" in row.message


def test_verified_but_not_reported_in_process_is_a_warning() -> None:
    ev = evidence({"caching": ran("caching", 2)}, reported={"other": True})
    assert only([plan("caching", "In Progress")], [], ev, "caching").verdict == "warning"


def test_reported_features_and_unknown_reports_are_not_flagged() -> None:
    ev = evidence({"caching": ran("caching", 2)}, reported={"caching": False}, url="http://127.0.0.1:9")
    assert only([plan("caching", "In Progress")], [], ev, "caching").verdict == "info"
    ev = evidence({"caching": ran("caching", 2)}, reported=None, url="http://127.0.0.1:9")
    assert only([plan("caching", "In Progress")], [], ev, "caching").verdict == "info"


def test_evidence_is_looked_up_by_the_plans_feature_key() -> None:
    row = only(
        [plan("smart-cache", "Completed", feature="caching")],
        [],
        evidence({"caching": ran("c", 1)}),
        "smart-cache",
    )
    assert row.verdict == "ok"
    assert "caching" not in {
        r.slug for r in judge([plan("smart-cache", "Planned", "caching")], [], evidence()).features
    }


def test_summary_counts_and_json_shape() -> None:
    report = judge(
        [plan("a", "Completed"), plan("b", "Planned"), plan("c", "In Progress")],
        [],
        evidence({"b": ran("b", 1), "c": ran("c", 1, 1)}),
    )
    data = report.to_json()
    assert data["summary"] == {"errors": 1, "warnings": 1}
    assert [f["slug"] for f in data["features"]] == ["a", "b", "c"]
    assert set(data["features"][2]) == {
        "slug",
        "status",
        "passed",
        "failed",
        "skipped",
        "progress",
        "verdict",
        "message",
    }
    assert data["features"][2]["progress"] == 0.5
    table = format_table(report)
    assert table.splitlines()[0].split()[:3] == ["FEATURE", "STATUS", "PASS"]
    assert "1 error(s), 1 warning(s)" in table and "abc123" in table
