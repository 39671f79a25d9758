"""Drift on every page: regressions, stale evidence, declared steps, closed and invalid plans.

Every page renders `planner track`'s verdict (`judge`) per feature; these tests feed the renderer a roadmap
whose evidence disagrees with the plans and check that each page says so.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from site_fixtures import make_design, make_plan
from test_render import TODAY, evidence

from planner.config import PlannerConfig
from planner.evidence import Evidence, FeatureEvidence, RecordedTest
from planner.model import Design
from planner.render import Renderer, Roadmap
from planner.render.links import LinkStyle


def regressed_roadmap(root: Path) -> Roadmap:
    """`admin-api` is a completed design (High priority) with one failing acceptance test."""
    ev = evidence()
    ev.features["admin-api"] = FeatureEvidence(
        1, 1, 0, (RecordedTest("t.py::test_ok", "passed"), RecordedTest("t.py::test_keys", "failed"))
    )
    plans = (
        make_plan("cache", status="In Progress", root=root),
        make_plan("usage", priority="Medium", status="Planned", root=root),
    )
    design = dataclasses.replace(make_design("admin-api", root), priority="High")
    return Roadmap(PlannerConfig(root=root), plans, (design,), ev, (), TODAY)


def test_a_regression_is_red_on_every_page(tmp_path: Path) -> None:
    roadmap = regressed_roadmap(tmp_path)
    pages = Renderer().render(roadmap)
    banner = '!!! failure "Regression: 1 completed feature no longer passes its acceptance tests"'
    for name in ("index", "board", "readiness", "priorities"):
        assert banner in pages[f"roadmap/{name}.md"], name
        assert (
            "[Admin-Api](../design/admin-api.md): regression: 1 of 2 acceptance tests fail"
            in pages[f"roadmap/{name}.md"]
        )
    index = pages["roadmap/index.md"]
    assert "**Features completed:** 1 of 3 (33%), of which **1 regressed**" in index
    assert 'planner-flag-regression">1 regressed</span>' in index
    board = pages["roadmap/board.md"]
    completed = board.split("### Completed")[1]
    card = next(line for line in completed.splitlines() if "Admin-Api" in line)
    assert "1/2 tests" in card and "planner-flag-regression" in card  # the red card (roadmap.css)
    assert "### Completed (1, 1 regressed)" in board
    readiness = pages["roadmap/readiness.md"]
    assert "**0 of 3 verified, 1 regression:" in readiness and "not ready</span>" in readiness
    assert "- [ ] [Admin-Api](../design/admin-api.md)" in readiness.split("## High")[1].split("## Medium")[0]
    graph = pages["roadmap/dependencies.md"]
    assert 'n_admin_api["Admin-Api"]:::regression' in graph and "classDef regression" in graph
    assert 'planner-flag-regression">regression</span> (completed, but' in graph  # the legend says so
    data = json.loads(pages["roadmap/roadmap.json"])
    assert data["completed"][0]["evidence"]["regression"] is True
    assert data["completed"][0]["priority"] == "High"


def test_the_design_page_shows_live_verification(tmp_path: Path) -> None:
    roadmap = regressed_roadmap(tmp_path)
    design = roadmap.designs[0]
    text = (
        "# Admin API\n\nCompleted 2026-11-20: 2 of 2 acceptance tests passing (2026-11-20 at commit 0ld).\n\n"
        "## Goal\n\nKeys.\n"
    )
    page = Renderer().design_page(roadmap, design, text, "design/admin-api.md")
    assert page.startswith("# Admin API\n")
    assert 'planner-flag-regression"' in page
    assert '!!! failure "Regression"' in page
    assert "regression: 1 of 2 acceptance tests fail: t.py::test\\_keys" in page
    assert "- **failed**: `test_keys` in `t.py`" in page
    # The numbers recorded at completion stay, as history, below the live box.
    assert "Completed 2026-11-20; at completion: 2 of 2 acceptance tests passing" in page
    assert page.index("Regression") < page.index("at completion")
    assert page.rstrip().endswith("## Goal\n\nKeys.")


def test_a_completed_plan_with_a_failing_test_is_red_on_its_page(tmp_path: Path) -> None:
    ev = Evidence("2026-11-26T04:00:00+00:00", "abc1234", None, None, {"limits": FeatureEvidence(2, 1)})
    plans = (make_plan("limits", status="Completed", root=tmp_path),)
    pages = Renderer().render(Roadmap(PlannerConfig(root=tmp_path), plans, (), ev, (), TODAY))
    text = pages["roadmap/plans/limits.md"]
    assert '!!! failure "Regression"' in text and "planner-flag-regression" in text
    assert "marked Completed: 1 of 3 acceptance tests fail" in text


def with_verdicts(roadmap: Roadmap, **changes: dict[str, object]) -> Roadmap:
    """The roadmap with some of track's verdicts changed (fields the evidence branch computes)."""
    report = roadmap.report
    assert report is not None
    rows = tuple(dataclasses.replace(r, **changes.get(r.slug, {})) for r in report.features)  # type: ignore[arg-type]
    roadmap.__dict__["report"] = dataclasses.replace(report, features=rows)
    return roadmap


def test_stale_evidence_shows_wherever_status_shows(tmp_path: Path) -> None:
    stale = {"stale": "from commit abc1234"}
    roadmap = with_verdicts(regressed_roadmap(tmp_path), cache=stale, usage=stale, **{"admin-api": stale})
    pages = Renderer().render(roadmap)
    assert '!!! warning "Stale evidence: from commit abc1234"' in pages["roadmap/index.md"]
    for name in ("board", "priorities", "readiness", "plans/cache"):
        assert 'planner-flag-stale"' in pages[f"roadmap/{name}.md"], name
        assert "stale: from commit abc1234" in pages[f"roadmap/{name}.md"], name
    assert "stale: from commit abc1234" in pages["roadmap/plans/cache.md"].split("## Goal")[0]


def test_progress_is_steps_done_over_steps_declared(tmp_path: Path) -> None:
    roadmap = with_verdicts(
        regressed_roadmap(tmp_path), cache={"steps_done": 3, "steps_total": 7, "passed": 5, "failed": 0}
    )
    pages = Renderer().render(roadmap)
    index = pages["roadmap/index.md"]
    assert "**Steps verified:** 3 of 7 declared implementation steps (43%)" in index
    assert "3 of 7 steps verified, tests 5 of 5 passing" in index.split("## In progress")[1]
    assert '<a href="plans/cache.md">Cache</a><br>' in pages["roadmap/board.md"]
    assert "1 week · 3/7 steps" in pages["roadmap/board.md"]
    assert "- [ ] [Cache](plans/cache.md)" in pages["roadmap/readiness.md"]  # all tests pass, 4 steps to go
    cache = next(p for p in json.loads(pages["roadmap/roadmap.json"])["plans"] if p["slug"] == "cache")
    assert cache["evidence"]["progress"] == 3 / 7 and cache["evidence"]["verified"] is False
    done = with_verdicts(
        regressed_roadmap(tmp_path), cache={"steps_done": 7, "steps_total": 7, "passed": 5, "failed": 0}
    )
    assert "- [x] [Cache](plans/cache.md)" in Renderer().render(done)["roadmap/readiness.md"]
    declared = with_verdicts(regressed_roadmap(tmp_path), usage={"steps_total": 4})
    assert (
        "| 0 of 4 steps verified, no acceptance test ran |"
        in Renderer().render(declared)["roadmap/priorities.md"]
    )


def test_completed_features_keep_their_priority_and_count(tmp_path: Path) -> None:
    ev = Evidence("2026-11-26T04:00:00+00:00", "abc1234", None, None, {"rate": FeatureEvidence(3, 0)})
    design = Design(tmp_path / "docs/design/rate.md", "rate", "Rate", "rate", priority="High")
    roadmap = Roadmap(
        PlannerConfig(root=tmp_path), (make_plan("usage", priority="Medium", root=tmp_path),), (design,), ev
    )
    pages = Renderer().render(roadmap)
    assert "No high priority" not in pages["roadmap/priorities.md"]
    assert "No high priority" not in pages["roadmap/readiness.md"]
    high = pages["roadmap/priorities.md"].split("## High")[1].split("## Medium")[0]
    assert "[Rate](../design/rate.md)" in high and "3 of 3 passing" in high
    assert "- [x] [Rate](../design/rate.md)" in pages["roadmap/readiness.md"]
    row = next(line for line in pages["roadmap/index.md"].splitlines() if "status-completed" in line)
    assert row.endswith("| 1 | 0 | 0 | 1 |")  # the Completed row counts the design, by its priority


def test_closed_plans_are_archived_not_scheduled(tmp_path: Path) -> None:
    plans = (
        make_plan("cache", root=tmp_path),
        make_plan("old-cache", status="Rejected", root=tmp_path, title="Old Cache"),
        dataclasses.replace(
            make_plan("lru", status="Superseded", root=tmp_path, title="LRU"), superseded_by="cache"
        ),
    )
    pages = Renderer(LinkStyle.MARKDOWN).render(Roadmap(PlannerConfig(root=tmp_path), plans, (), None))
    rejected = pages["roadmap/archive/rejected.md"]
    assert rejected.startswith("# Rejected proposals\n")
    assert "| [Old Cache](../plans/old-cache.md) | " in rejected
    superseded = pages["roadmap/archive/superseded.md"]
    assert "| Feature | Priority | Owner | Updated | Superseded by |" in superseded
    assert "| [LRU](../plans/lru.md) |" in superseded and "| [Cache](../plans/cache.md) |" in superseded
    assert "No proposal is withdrawn." in pages["roadmap/archive/withdrawn.md"]
    archive = pages["roadmap/archive/index.md"]
    assert "## [Rejected](rejected.md) (1)" in archive and "## [Deferred](deferred.md) (0)" in archive
    board = pages["roadmap/board.md"]
    assert "Old Cache" not in board.split("</div>\n\n</div>")[0]  # not in any column
    assert "[Rejected (1)](archive/rejected.md)" in board
    assert "old-cache" not in pages["roadmap/timeline.md"] and "t_lru" not in pages["roadmap/timeline.md"]
    assert "[<span" in pages["roadmap/index.md"] and "](archive/rejected.md)" in pages["roadmap/index.md"]
    lru = pages["roadmap/plans/lru.md"]
    assert '!!! abstract "Superseded by cache"' in lru and "Superseded by [Cache](cache.md)." in lru
    assert "Verified progress" not in lru  # a closed proposal is not tracked


def test_an_invalid_status_is_not_a_board_column(tmp_path: Path) -> None:
    plans = (make_plan("cache", root=tmp_path), make_plan("done-thing", status="Done", root=tmp_path))
    pages = Renderer().render(Roadmap(PlannerConfig(root=tmp_path), plans, (), None))
    board = pages["roadmap/board.md"]
    columns = [line[4:].split(" (")[0] for line in board.splitlines() if line.startswith("### ")]
    assert columns == ["Proposed", "Planned", "In Progress", "Completed"]
    assert '!!! failure "Invalid status: not on the board"' in board
    assert "[Done Thing](plans/done-thing.md)" in board.split("Invalid status")[1]
    assert 'planner-flag-invalid">invalid status</span>' in pages["roadmap/index.md"]
    assert '!!! failure "Invalid status Done"' in pages["roadmap/plans/done-thing.md"]


def test_failure_messages_show_on_the_plan_page(tmp_path: Path) -> None:
    failures = (("t.py::test_miss", "assert 'MISS' == 'HIT'"),)
    roadmap = with_verdicts(regressed_roadmap(tmp_path), cache={"failures": failures})
    text = Renderer().render(roadmap)["roadmap/plans/cache.md"]
    assert "    Failures:\n\n    - `test_miss`: assert 'MISS' == 'HIT'" in text
