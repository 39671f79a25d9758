"""The renderer's pages for a fixture set of plans, with and without evidence."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from site_fixtures import make_design, make_plan

from planner.config import PlannerConfig
from planner.evidence import Evidence, FeatureEvidence, RecordedTest
from planner.render import Renderer, Roadmap, write_pages
from planner.render.links import LinkStyle, href, page_url

TODAY = date(2026, 11, 26)  # a Thursday


def fixture_roadmap(root: Path, evidence: Evidence | None = None) -> Roadmap:
    plans = (
        make_plan("cache", status="In Progress", dependencies=("usage",), root=root),
        make_plan("usage", priority="Medium", status="Planned", estimate_text="3-5 days", root=root),
        make_plan(
            "ws",
            priority="Low",
            dependencies=("cache", "admin-api"),
            title='Sockets: "live" | fast',
            root=root,
        ),
        make_plan("limits", status="Completed", root=root),
    )
    return Roadmap(PlannerConfig(root=root), plans, (make_design("admin-api", root),), evidence, (), TODAY)


def evidence() -> Evidence:
    return Evidence(
        generated_at="2026-11-26T04:00:00+00:00",
        git_commit="abc1234def5678",
        gateway_version="0.1.0",
        gateway_url=None,
        features={
            "cache": FeatureEvidence(
                4, 1, 0, (RecordedTest("t.py::test_hit", "passed"), RecordedTest("t.py::test_miss", "failed"))
            ),
            "limits": FeatureEvidence(3, 0, 1),
            "admin-api": FeatureEvidence(2, 0, 0),
        },
    )


@pytest.fixture
def pages(tmp_path: Path) -> dict[str, str]:
    return Renderer(LinkStyle.DIRECTORY).render(fixture_roadmap(tmp_path, evidence()))


def test_every_page_is_generated(pages: dict[str, str]) -> None:
    expected = {
        f"roadmap/{name}.md"
        for name in ("index", "priorities", "board", "dependencies", "timeline", "readiness", "changes")
    }
    expected |= {f"roadmap/plans/{slug}.md" for slug in ("cache", "usage", "ws", "limits")}
    expected |= {
        f"roadmap/archive/{name}.md" for name in ("index", "rejected", "withdrawn", "deferred", "superseded")
    }
    assert set(pages) == expected | {"roadmap/roadmap.json", "roadmap/feed.xml"}


def test_overview_counts_and_progress(pages: dict[str, str]) -> None:
    index = pages["roadmap/index.md"]
    assert "5 features on the roadmap, 2 completed." in index
    assert "**Features completed:** 2 of 5 (40%)" in index
    assert "**Acceptance tests:** 9 passing, 1 failing, recorded 2026-11-26 at commit abc1234" in index
    # Passing tests of work in progress are not progress: without steps linked to tests, none is claimed.
    assert "passing (9" not in index and "100%" not in index
    in_progress = index.split("## In progress")[1].split("## Next up")[0]
    assert "[Cache](plans/cache.md)" in in_progress
    assert "tests 4 of 5 passing; no steps linked to tests, so no progress measured" in in_progress
    next_up = index.split("## Next up")[1].split("## Pages")[0]
    assert next_up.index("[Usage]") < next_up.index("[Sockets")
    assert "[Cache]" not in next_up


def test_priorities_group_plans_with_their_verified_progress(pages: dict[str, str]) -> None:
    text = pages["roadmap/priorities.md"]
    high, rest = text.split("## High\n")[1].split("## Medium\n")
    medium, low = rest.split("## Low\n")
    assert "acceptance tests recorded by `planner track`, verified 2026-11-26 at commit abc1234" in text
    assert "| [Cache](plans/cache.md) |" in high and "| tests 4 of 5 passing; no steps" in high
    assert "| 3 of 3 passing (1 skipped) |" in high
    assert "[Usage](plans/usage.md)" in medium and "3-5 days" in medium
    # A title with Markdown table syntax is escaped, not split into cells.
    assert r'| [Sockets: "live" \| fast](plans/ws.md) |' in low
    assert "[Admin-Api](../design/admin-api.md)" in low


def test_board_has_one_column_per_status(pages: dict[str, str]) -> None:
    board = pages["roadmap/board.md"]
    for status, count in (("Proposed", 1), ("Planned", 1), ("In Progress", 1), ("Completed", 2)):
        assert f"### {status} ({count})" in board
    completed = board.split("### Completed")[1]
    assert '<li><a href="../plans/limits/">Limits</a><br>' in completed
    assert '<li><a href="../../design/admin-api/">Admin-Api</a><br>' in completed


def test_dependency_diagram_links_nodes_and_colours_by_status(pages: dict[str, str]) -> None:
    text = pages["roadmap/dependencies.md"]
    graph = text.split("```mermaid")[1].split("```")[0]
    assert 'n_cache["Cache"]:::in_progress' in graph
    assert 'n_ws["Sockets: #quot;live#quot; | fast"]:::proposed' in graph
    assert "n_usage --> n_cache" in graph and "n_admin_api --> n_ws" in graph
    assert 'click n_cache href "../plans/cache/"' in graph
    assert 'click n_admin_api href "../../design/admin-api/"' in graph
    assert "classDef in_progress" in graph


def test_timeline_schedules_with_dependencies_and_lists_the_table(pages: dict[str, str]) -> None:
    text = pages["roadmap/timeline.md"]
    chart = text.split("```mermaid")[1].split("```")[0]
    assert "section Lane 1" in chart and "section Lane 2" in chart
    assert "Usage :t_usage, 2026-11-26, 2026-12-03" in chart  # 5 working days from Thursday 26th
    # cache depends on usage, but it is In Progress: started work is shown from today, never pushed later.
    assert "Cache :active, t_cache, 2026-11-26, 2026-12-03" in chart
    assert 'Sockets  "live" | fast' in chart  # gantt syntax characters removed from the name
    assert 'click t_ws href "../plans/ws/"' in chart
    assert "t_limits" not in chart  # completed work takes no time
    table = text.split("```", 2)[2]
    assert "| [Usage](plans/usage.md) |" in table and "| 2026-11-26 | 2026-12-02 | — | — | — | 5 |" in table
    assert (
        "Completed, taking no time: [Limits](plans/limits.md), [Admin-Api](../design/admin-api.md)." in text
    )


def test_readiness_checks_only_verified_features(pages: dict[str, str]) -> None:
    text = pages["roadmap/readiness.md"]
    assert "- [ ] [Cache](plans/cache.md)" in text  # in progress with a failing test
    assert "- [x] [Limits](plans/limits.md)" in text  # all green
    assert "- [ ] [Usage](plans/usage.md)" in text  # no evidence
    assert "Sockets" not in text  # Low priority is not a production feature
    assert "**1 of 3 verified.**" in text


def test_plan_page_has_metadata_evidence_links_and_document(pages: dict[str, str]) -> None:
    text = pages["roadmap/plans/cache.md"]
    assert text.startswith("# Cache\n")
    assert text.count("\n# ") == 0  # the document's own H1 is not repeated
    assert 'planner-status-in-progress">In Progress</span>' in text
    # The metadata is one HTML block (no blank line inside), its links the addresses the pages will have.
    meta = text.split('<div class="planner-meta">\n', 1)[1].split("\n</div>\n", 1)[0]
    assert "\n\n" not in meta and " markdown" not in meta
    assert (
        "<td>High</td><td>Moderate</td><td>1 week</td><td>gateway-team</td><td>2026-11-20</td>"
        "<td><code>cache</code></td>" in meta
    )
    assert '<strong>Depends on:</strong> <a href="../usage/">Usage</a>' in meta
    assert '<strong>Needed by:</strong> <a href="../ws/">Sockets: &quot;live&quot; | fast</a>' in meta
    assert '(<a href="../../timeline/">timeline</a>)' in meta
    assert "4 of 5 acceptance tests passing (evidence recorded 2026-11-26 at commit abc1234)" in text
    assert "- **failed**: `test_miss` in `t.py`" in text and "- passed: `test_hit` in `t.py`" in text
    assert "## Goal\n\nMake cache work." in text


def test_without_evidence_pages_say_not_verified_yet(tmp_path: Path) -> None:
    pages = Renderer().render(fixture_roadmap(tmp_path))
    assert "not verified yet" in pages["roadmap/plans/cache.md"]
    assert "passing" not in pages["roadmap/plans/cache.md"]
    assert "**Verified progress:** not verified yet — run `planner track`" in pages["roadmap/index.md"]
    for name in ("index", "board", "priorities", "readiness"):  # a fresh clone says how to get evidence
        assert (
            '!!! warning "Not verified yet: no evidence recorded in this checkout"'
            in pages[f"roadmap/{name}.md"]
        )
        assert "Run `planner track` in the project folder" in pages[f"roadmap/{name}.md"]
    assert "- [x]" not in pages["roadmap/readiness.md"]
    data = json.loads(pages["roadmap/roadmap.json"])
    assert data["evidence"] is None
    assert all(p["evidence"]["summary"] == "not verified yet" for p in data["plans"])


def test_evidence_from_a_dirty_work_tree_says_so(tmp_path: Path) -> None:
    ev = Evidence(
        "2026-11-26T04:00:00+00:00", "abc1234def-dirty", None, None, {"usage": FeatureEvidence(1, 0)}
    )
    pages = Renderer().render(fixture_roadmap(tmp_path, ev))
    expected = (
        "1 of 1 acceptance test passing (evidence recorded 2026-11-26 at commit abc1234 with uncommitted"
    )
    assert expected in pages["roadmap/plans/usage.md"]
    assert "recorded 2026-11-26 at commit abc1234 with uncommitted changes" in pages["roadmap/index.md"]


def test_evidence_without_tests_for_a_feature_is_not_progress(tmp_path: Path) -> None:
    ev = Evidence("2026-11-26T04:00:00+00:00", None, None, None, {"usage": FeatureEvidence(0, 0, 2)})
    text = Renderer().render(fixture_roadmap(tmp_path, ev))["roadmap/plans/usage.md"]
    # Not the contradiction "not verified yet: no acceptance tests recorded (verified 2026-11-26)".
    assert "No acceptance test of this feature ran (2 skipped) (evidence recorded 2026-11-26)" in text
    assert "verified 2026" not in text


def test_roadmap_json_holds_metadata_schedule_and_evidence(pages: dict[str, str]) -> None:
    data = json.loads(pages["roadmap/roadmap.json"])
    assert data["evidence"]["git_commit"] == "abc1234def5678"
    cache = next(p for p in data["plans"] if p["slug"] == "cache")
    assert cache["dependencies"] == ["usage"] and cache["dependents"] == ["ws"]
    assert cache["evidence"]["passed"] == 4 and cache["evidence"]["progress"] is None  # no steps declared
    assert cache["evidence"]["verdict"] == "info" and cache["evidence"]["regression"] is False
    assert cache["schedule"] == {"lane": 2, "start_day": 0, "end_day": 5}  # In Progress: from today
    assert cache["source"] == "plans/HIGH-cache.md"
    assert data["completed"][0]["slug"] == "admin-api" and data["completed"][0]["evidence"]["verified"]


def test_diagram_note_appears_above_each_diagram(tmp_path: Path) -> None:
    pages = Renderer(diagrams_note="Run `planner fetch-diagrams` once.").render(fixture_roadmap(tmp_path))
    for name in ("dependencies", "timeline"):
        assert (
            '!!! note "Diagram not drawn"\n    Run `planner fetch-diagrams` once.'
            in pages[f"roadmap/{name}.md"]
        )


def test_plan_links_relative_to_plans_are_repointed(tmp_path: Path) -> None:
    (tmp_path / "docs" / "gateway").mkdir(parents=True)
    body = (
        "# Cache\n\nSee [usage](MEDIUM-usage.md#goal), [the guide](../docs/gateway/index.md), "
        "[code](../gateway/app.py), [web](https://example.org/x) and [here](#goal).\n\n"
        "```\n[not a link](MEDIUM-usage.md)\n```\n"
    )
    roadmap = fixture_roadmap(tmp_path)
    plans = (make_plan("cache", body=body, root=tmp_path), *roadmap.plans[1:])
    roadmap = Roadmap(roadmap.config, plans, roadmap.designs, None, (), TODAY)
    text = Renderer().render(roadmap)["roadmap/plans/cache.md"]
    assert "[usage](usage.md#goal)" in text
    assert "[the guide](../../gateway/index.md)" in text
    assert "code (`gateway/app.py`)" in text
    assert "[web](https://example.org/x)" in text and "[here](#goal)" in text
    assert "[not a link](MEDIUM-usage.md)" in text


def test_write_pages_writes_markdown_and_copies_designs(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "docs" / "design").mkdir(parents=True)
    (root / "docs" / "design" / "admin-api.md").write_text("# Admin API\n", encoding="utf-8")
    roadmap = fixture_roadmap(root, evidence())
    renderer = Renderer(LinkStyle.MARKDOWN)
    out = tmp_path / "out"
    written = write_pages(roadmap, out, renderer.render(roadmap), renderer=renderer)
    assert (out / "roadmap" / "index.md").is_file() and (out / "roadmap" / "plans" / "ws.md").is_file()
    design = (out / "design" / "admin-api.md").read_text(encoding="utf-8")
    assert design.startswith("# Admin API\n") and "2 of 2 acceptance tests passing" in design
    assert (out / "roadmap" / "archive" / "rejected.md").is_file()
    assert len(written) == 19  # with the changes page and the Atom feed
    assert not list(out.rglob("*.tmp"))
    timeline = (out / "roadmap" / "timeline.md").read_text(encoding="utf-8")
    assert 'click t_cache href "plans/cache.md"' in timeline  # plain Markdown links to the file


@pytest.mark.parametrize(
    ("src", "style", "url"),
    [
        ("roadmap/index.md", LinkStyle.DIRECTORY, "roadmap/"),
        ("roadmap/board.md", LinkStyle.DIRECTORY, "roadmap/board/"),
        ("index.md", LinkStyle.DIRECTORY, ""),
        ("roadmap/board.md", LinkStyle.HTML, "roadmap/board.html"),
        ("roadmap/board.md", LinkStyle.MARKDOWN, "roadmap/board.md"),
    ],
)
def test_page_urls(src: str, style: LinkStyle, url: str) -> None:
    assert page_url(src, style) == url


def test_hrefs_between_pages() -> None:
    d = LinkStyle.DIRECTORY
    assert href("roadmap/board.md", "roadmap/plans/x.md", d) == "../plans/x/"
    assert href("roadmap/index.md", "roadmap/plans/x.md", d) == "plans/x/"
    assert href("roadmap/plans/x.md", "design/y.md", d) == "../../../design/y/"
    assert href("roadmap/board.md", "roadmap/plans/x.md", LinkStyle.HTML) == "plans/x.html"
    assert href("roadmap/timeline.md", "roadmap/index.md", d) == "../"


def test_hrefs_match_posix_relative_paths() -> None:
    import itertools
    import posixpath

    from planner.render.links import _relpath

    addresses = ["", "a", "a/", "a/b/", "a/b/c.html", "roadmap/plans/x/", "design/y/", "../out/z/", "/abs/p/"]
    for path, start in itertools.product(addresses, addresses):
        if not start.endswith("/") and start:
            continue  # hrefs start from a folder
        expected = posixpath.relpath(path or ".", start or ".")
        assert _relpath(path, start) == expected, (path, start)


def test_markdown_links_match_posix_relative_paths() -> None:
    import itertools
    import posixpath

    from planner.render.links import md_link

    paths = [
        "index.md",
        "a.md",
        "roadmap/index.md",
        "roadmap/plans/x.md",
        "design/y.md",
        "roadmap/plansx/z.md",
    ]
    for here, there in itertools.product(paths, paths):
        assert md_link(here, there) == posixpath.relpath(there, posixpath.dirname(here) or "."), (here, there)


def test_plans_waiting_on_unfinished_work_are_marked_blocked_with_their_owner(pages: dict[str, str]) -> None:
    # cache depends on usage, which is not finished; ws on cache (not finished) and admin-api (a completed
    # design, which blocks nothing); usage depends on nothing.
    board = pages["roadmap/board.md"]
    lines = board.splitlines()
    cards = {line.split(">")[2].split("<")[0]: line for line in lines if line.startswith("<li><a")}
    assert "planner-flag-blocked" in cards["Cache"]
    assert 'by <a href="../plans/usage/">Usage</a>' in cards["Cache"]
    ws_card = next(card for title, card in cards.items() if title.startswith("Sockets"))
    assert ws_card.endswith('blocked</span> by <a href="../plans/cache/">Cache</a></li>')
    assert "planner-flag-blocked" not in cards["Usage"]
    assert 'blocked</span> by <a href="../usage/">Usage</a>' in pages["roadmap/plans/cache.md"]
    priorities = pages["roadmap/priorities.md"]
    assert "| Feature | Status | Owner |" in priorities
    assert "blocked</span> by [Usage](plans/usage.md)" in priorities


def test_priority_labels_and_the_readiness_page_come_from_the_config(tmp_path: Path) -> None:
    from dataclasses import replace

    from planner.config import Readiness

    roadmap = fixture_roadmap(tmp_path, evidence())
    labelled = replace(
        roadmap,
        config=replace(
            roadmap.config,
            priority_labels={"High": "must ship"},
            readiness=Readiness(title="Launch checklist", priorities=("High",)),
        ),
    )
    pages = Renderer(LinkStyle.DIRECTORY).render(labelled)
    assert (
        "## High: must ship\n" in pages["roadmap/priorities.md"]
        and "## Medium\n" in pages["roadmap/priorities.md"]
    )
    readiness = pages["roadmap/readiness.md"]
    assert readiness.startswith("# Launch checklist") and "## Medium" not in readiness
    assert "[Launch checklist](readiness.md)" in pages["roadmap/index.md"]
    off = replace(roadmap, config=replace(roadmap.config, readiness=Readiness(enabled=False)))
    pages = Renderer(LinkStyle.DIRECTORY).render(off)
    assert "roadmap/readiness.md" not in pages and "readiness.md" not in pages["roadmap/index.md"]


def test_health_targets_and_review_records_are_shown(tmp_path: Path) -> None:
    from dataclasses import replace
    from datetime import date

    from planner.tracking import Tracking

    roadmap = fixture_roadmap(tmp_path, evidence())
    cache = roadmap.plans_by_slug["cache"]
    tracked = replace(
        cache,
        owner="ana",
        tracking=Tracking(
            target=date(2026, 11, 27),  # before the forecast end: at risk
            health="off track",
            health_note="the vendor cut\n\nour quota",  # a blank line must not end the HTML block
            health_date=date(2026, 11, 25),
            discussion="https://example.com/discuss/1",
            reviewers=("bo",),
            approvers=("cy",),
            decision_date=date(2026, 11, 20),
        ),
    )
    plans = tuple(tracked if p.slug == "cache" else p for p in roadmap.plans)
    pages = Renderer(LinkStyle.MARKDOWN).render(replace(roadmap, plans=plans))
    board = pages["roadmap/board.md"].splitlines()
    board_card = next(line for line in board if line.startswith('<li><a href="plans/cache.md">Cache</a>'))
    assert "planner-health-off-track" in board_card and "the vendor cut  our quota (2026-11-25)" in board_card
    index = pages["roadmap/index.md"]
    health = index.split("## Health")[1].split("## Next up")[0]
    assert "| [Cache](plans/cache.md) | ana |" in health and "2026-11-27" in health and "at risk" in health
    page = pages["roadmap/plans/cache.md"]
    assert "<strong>Health:</strong> off track (assessed 2026-11-25): the vendor cut  our quota" in page
    meta = page.split('<div class="planner-meta">\n', 1)[1].split("\n</div>\n", 1)[0]
    assert "\n\n" not in meta
    assert "<strong>Target:</strong> 2026-11-27 <span" in page and "at risk" in page
    assert (
        '<a href="https://example.com/discuss/1">discussion</a> · reviewers bo · approvers cy'
        " · decided 2026-11-20" in page
    )
    assert '<a href="usage.md">Usage</a>' in page  # plain Markdown files link to the .md file
    chart = pages["roadmap/timeline.md"].split("```mermaid")[1]
    assert "Cache :active, crit, t_cache" in chart  # past its target: drawn red


def test_a_roadmap_with_everything_completed_says_so_instead_of_an_empty_timeline(tmp_path: Path) -> None:
    roadmap = Roadmap(
        PlannerConfig(root=tmp_path),
        (make_plan("limits", status="Completed", root=tmp_path),),
        (make_design("admin-api", tmp_path),),
        None,
        (),
        TODAY,
    )
    timeline = Renderer(LinkStyle.DIRECTORY).render(roadmap)["roadmap/timeline.md"]
    assert "```mermaid" not in timeline and "| Feature |" not in timeline
    assert "Nothing is left to schedule" in timeline
    assert "Completed, taking no time:" in timeline and "admin-api" in timeline
