"""The mkdocs plugin and the site commands: strict builds, invalid plans, navigation, offline diagrams."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from mkdocs.structure.files import File, Files
from site_fixtures import REPO, mkdocs_build

from planner.cli import main
from planner.mkdocs_plugin import automatic_nav, expand_nav
from planner.render.assets import FETCH_HINT, mermaid_path

PLAN = """---
title: {title}
status: {status}
priority: {priority}
complexity: Simple
estimate: 2 days
dependencies: [{deps}]
---
# {title}

## Goal

Do {slug}.

## User Benefit

Users get {slug}.

## Design Proposal

A stage.

## Implementation Steps

1. Build it.

## Open Questions

None.

## Alternatives Considered

None.
"""

MKDOCS_YML = """site_name: Fixture roadmap
theme:
  name: material
  font: false
plugins:
  - planner:
      fetch_diagrams: false
nav:
  - Home: index.md
  - Roadmap: roadmap/
  - Tutorial: tutorial/
  - Missing: nowhere/
"""


def write_plan(
    root: Path, slug: str, priority: str = "High", status: str = "Planned", deps: str = ""
) -> Path:
    path = root / "plans" / f"{priority.upper()}-{slug}.md"
    title = slug.title()
    path.write_text(
        PLAN.format(title=title, slug=slug, priority=priority, status=status, deps=deps), encoding="utf-8"
    )
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "plans").mkdir(parents=True)
    (root / "docs" / "tutorial").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "fixture"\n\n[tool.planner]\nlanes = 1\n')
    (root / "mkdocs.yml").write_text(MKDOCS_YML, encoding="utf-8")
    (root / "docs" / "index.md").write_text("# Home\n", encoding="utf-8")
    tutorial_index = "# Tutorial\n\nStart with [zeta](zeta.md#top).\n"
    (root / "docs" / "tutorial" / "index.md").write_text(tutorial_index, encoding="utf-8")
    (root / "docs" / "tutorial" / "zeta.md").write_text("# Zeta\n", encoding="utf-8")
    (root / "docs" / "tutorial" / "alpha.md").write_text("# Alpha guide\n", encoding="utf-8")
    write_plan(root, "alpha", deps="beta")
    write_plan(root, "beta", priority="Low")
    return root


def test_this_repository_builds_strict(repo_site: Path) -> None:
    site = repo_site
    assert (site / "roadmap" / "index.html").is_file()
    for page in ("priorities", "board", "dependencies", "timeline", "readiness"):
        assert (site / "roadmap" / page / "index.html").is_file()
    data = json.loads((site / "roadmap" / "roadmap.json").read_text(encoding="utf-8"))
    slugs = {p["slug"] for p in data["plans"]} | {d["slug"] for d in data["completed"]}
    assert {"response-caching", "rate-limiting", "admin-api"} <= slugs
    for plan in data["plans"]:  # open plans (none once every feature is completed): a page each
        assert (site / "roadmap" / "plans" / plan["slug"] / "index.html").is_file()
    for design in data["completed"]:  # completed: a design page each
        assert (site / "design" / design["slug"] / "index.html").is_file()
    assert (site / "design" / "response-caching" / "index.html").is_file()
    assert not (REPO / "docs" / "roadmap").exists()  # generated in memory, never written into docs/


def test_fixture_site_generates_pages_in_memory(project: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = mkdocs_build(project, site, "--strict")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (project / "docs").iterdir()) == ["index.md", "tutorial"]
    board = (site / "roadmap" / "board" / "index.html").read_text(encoding="utf-8")
    assert 'href="../plans/alpha/"' in board and 'href="../plans/beta/"' in board
    assert (site / "roadmap" / "plans" / "alpha" / "index.html").is_file()
    assert (site / "assets" / "planner" / "roadmap.js").is_file()
    assert (site / "assets" / "planner" / "roadmap.css").is_file()
    timeline = (site / "roadmap" / "timeline" / "index.html").read_text(encoding="utf-8")
    assert 'class="planner-mermaid"' in timeline and "gantt" in timeline
    assert "unpkg.com" not in timeline and "cdn" not in timeline.lower()
    data = json.loads((site / "roadmap" / "roadmap.json").read_text(encoding="utf-8"))
    assert [p["slug"] for p in data["plans"]] == ["alpha", "beta"]
    assert data["plans"][0]["evidence"]["summary"] == "not verified yet"


@pytest.mark.parametrize("directory_urls", [True, False])
def test_plan_page_metadata_links_reach_the_built_pages(
    project: Path, tmp_path: Path, directory_urls: bool
) -> None:
    # The metadata block is raw HTML, which mkdocs neither checks nor rewrites: its links must already be
    # the addresses the built pages have, with and without directory URLs.
    config = project / "mkdocs.yml"
    text = config.read_text(encoding="utf-8").replace("plugins:\n", "plugins:\n  - search\n", 1)
    config.write_text(text + ("" if directory_urls else "use_directory_urls: false\n"), encoding="utf-8")
    write_plan(project, "gamma", deps="alpha")
    site = tmp_path / "site"
    assert mkdocs_build(project, site, "--strict").returncode == 0
    page = site / "roadmap" / "plans" / ("alpha/index.html" if directory_urls else "alpha.html")
    html = page.read_text(encoding="utf-8")
    meta = html.split('<div class="planner-meta">', 1)[1].split("</div>", 1)[0]
    assert "<table>" in meta and "<td><code>alpha</code></td>" in meta
    hrefs = re.findall(r'href="([^"]+)"', meta)
    assert len(hrefs) == 4  # blocked by beta, depends on beta, needed by gamma, the timeline
    for link in hrefs:
        target = (page.parent / link).resolve()
        assert (target / "index.html" if link.endswith("/") else target).is_file(), link
    assert {Path(h.rstrip("/")).stem for h in hrefs} == {"beta", "gamma", "timeline"}
    # The plugin sets the block aside while mkdocs converts the page: it is back, once, where it was (under
    # the title, above the verification box), no placeholder is left, and search indexes it.
    assert html.count('<div class="planner-meta">') == 1 and "plannermeta" not in html
    assert html.index('id="alpha"') < html.index("planner-meta") < html.index("Verified progress")
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    entry = next(d for d in index["docs"] if d["location"].startswith("roadmap/plans/alpha"))
    assert "Depends on:" in entry["text"] and "Beta" in entry["text"]


def test_without_the_diagram_library_pages_say_so(project: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert mkdocs_build(project, site).returncode == 0
    assert not mermaid_path(project).exists()
    assert not (site / "assets" / "planner" / "mermaid.min.js").exists()
    deps = (site / "roadmap" / "dependencies" / "index.html").read_text(encoding="utf-8")
    assert "Diagram not drawn" in deps and "planner fetch-diagrams" in deps
    assert "mermaid.min.js" not in deps


def test_with_the_diagram_library_it_is_served_locally(project: Path, tmp_path: Path) -> None:
    cached = mermaid_path(project)
    cached.parent.mkdir(parents=True)
    cached.write_text("/* stand-in for the checked library */", encoding="utf-8")
    site = tmp_path / "site"
    assert mkdocs_build(project, site, "--strict").returncode == 0
    served = site / "assets" / "planner" / "mermaid.min.js"
    assert served.read_text(encoding="utf-8") == "/* stand-in for the checked library */"
    deps = (site / "roadmap" / "dependencies" / "index.html").read_text(encoding="utf-8")
    assert 'src="../../assets/planner/mermaid.min.js"' in deps
    assert deps.index("assets/planner/mermaid.min.js") < deps.index("assets/planner/roadmap.js")
    assert "Diagram not drawn" not in deps


def test_navigation_lists_folders_and_drops_missing_ones(project: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert mkdocs_build(project, site, "--strict").returncode == 0
    html = (site / "index.html").read_text(encoding="utf-8")
    order = [
        html.index(f'href="{url}"')
        for url in ("roadmap/", "roadmap/board/", "tutorial/zeta/", "tutorial/alpha/")
    ]
    assert order == sorted(order)
    assert "roadmap/plans/alpha/" in html
    assert "nowhere" not in html


def test_invalid_plan_fails_strict_build_with_validate_messages(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = write_plan(project, "gamma", status="Doing", deps="nope")
    monkeypatch.chdir(project)
    expected = CliRunner().invoke(main, ["validate"]).output
    messages = [line.split(": ", 1)[1] for line in expected.splitlines() if line.startswith("plans/")]
    assert messages, expected
    strict = mkdocs_build(project, tmp_path / "strict", "--strict")
    assert strict.returncode != 0
    for message in messages:
        assert message in strict.stderr
    assert "Aborted" in strict.stdout + strict.stderr
    lenient = mkdocs_build(project, tmp_path / "lenient")
    assert lenient.returncode == 0, lenient.stderr
    overview = (tmp_path / "lenient" / "roadmap" / "index.html").read_text(encoding="utf-8")
    assert "problem" in overview and bad.name in overview
    # Under plain `mkdocs serve`/`build` the invalid status is marked, never a fifth board column.
    board = (tmp_path / "lenient" / "roadmap" / "board" / "index.html").read_text(encoding="utf-8")
    assert "Doing (" not in board and board.count('class="planner-column ') == 4
    assert "Invalid status: not on the board" in board and 'href="../plans/gamma/"' in board


def test_render_command_writes_markdown(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["render", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "written" in result.output
    # A fresh clone has no evidence: the command says how to get it, as the pages' banner does.
    assert "every feature shows 'not verified yet'; run `planner track`" in result.output
    index = (out / "roadmap" / "index.md").read_text(encoding="utf-8")
    assert index.startswith("# Roadmap") and "[Alpha](plans/alpha.md)" in index
    assert 'click t_alpha href "plans/alpha.md"' in (out / "roadmap" / "timeline.md").read_text(
        encoding="utf-8"
    )
    assert FETCH_HINT not in (out / "roadmap" / "dependencies.md").read_text(encoding="utf-8")


def test_render_and_build_refuse_invalid_plans(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    write_plan(project, "gamma", status="Doing")
    for args in (["render", "--out", str(tmp_path / "out")], ["build", "--site-dir", str(tmp_path / "site")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1
        assert "HIGH-gamma.md" in result.output and "Doing" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "site").exists()


def test_expand_nav_orders_index_first_and_nests_subfolders(tmp_path: Path) -> None:
    uris = [
        "index.md",
        "tutorial/b.md",
        "tutorial/index.md",
        "tutorial/deep/c.md",
        "roadmap/board.md",
        "roadmap/index.md",
        "roadmap/plans/x.md",
    ]
    files = Files([File(uri, str(tmp_path), str(tmp_path / "site"), True) for uri in uris])
    nav = [
        {"Home": "index.md"},
        {"Roadmap": "roadmap/"},
        {"Tutorial": "tutorial/"},
        {"Gone": "gone/"},
        "tutorial/",
    ]
    expanded = expand_nav(nav, files, "roadmap", show_plans=False)
    assert expanded == [
        {"Home": "index.md"},
        {"Roadmap": [{"Overview": "roadmap/index.md"}, {"Board": "roadmap/board.md"}]},
        {"Tutorial": ["tutorial/index.md", "tutorial/b.md", {"Deep": ["tutorial/deep/c.md"]}]},
        "tutorial/index.md",
        "tutorial/b.md",
        {"Deep": ["tutorial/deep/c.md"]},
    ]
    with_plans = expand_nav([{"Roadmap": "roadmap/"}], files, "roadmap", show_plans=True)
    assert with_plans[0]["Roadmap"][-1] == {"Plans": ["roadmap/plans/x.md"]}


def test_editing_a_plan_while_serving_updates_its_page(project: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    cmd = [sys.executable, "-m", "mkdocs", "serve", "--dev-addr", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*cmd, "--config-file", str(project / "mkdocs.yml")],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/roadmap/plans/beta/"
    try:
        assert "Beta" in wait_for(url, lambda text: "<h1" in text)
        plan = project / "plans" / "LOW-beta.md"
        plan.write_text(plan.read_text(encoding="utf-8").replace("Beta", "Beta Renamed"), encoding="utf-8")
        assert "Beta Renamed" in wait_for(url, lambda text: "Beta Renamed" in text)
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for(url: str, ready: Callable[[str], bool], timeout: float = 90.0) -> str:
    """Poll `url` until it answers 200 with a body for which `ready` holds."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=5)
            last = f"{response.status_code}"
            if response.status_code == 200 and ready(response.text):
                return response.text
        except httpx.TransportError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready after {timeout}s: {last}")


def stand_in_diagram_library(root: Path) -> None:
    """A cached library so the commands need no network (its content is not executed here)."""
    path = mermaid_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("/* stand-in */", encoding="utf-8")


def test_build_command_builds_strict(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_diagram_library(project)
    monkeypatch.chdir(project)
    site = tmp_path / "site"
    result = CliRunner().invoke(main, ["build", "--site-dir", str(site)])
    assert result.exit_code == 0, result.output
    assert (site / "roadmap" / "board" / "index.html").is_file()
    assert (site / "assets" / "planner" / "mermaid.min.js").read_text(encoding="utf-8") == "/* stand-in */"


def test_serve_command_serves_on_loopback(project: Path) -> None:
    stand_in_diagram_library(project)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", "from planner.cli import main; main()", "serve", "--port", str(port)],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        board = wait_for(f"http://127.0.0.1:{port}/roadmap/board/", lambda text: "Alpha" in text)
        assert 'href="../plans/alpha/"' in board
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_completed_features_appear_from_design_pages(project: Path, tmp_path: Path) -> None:
    design = project / "docs" / "design"
    design.mkdir()
    (design / "index.md").write_text("# Design decisions\n", encoding="utf-8")
    (design / "gamma.md").write_text(
        "---\ntitle: Gamma\npriority: High\nfeature: gamma\nstatus: Completed\n---\n# Gamma\n\n"
        "Completed 2026-11-20: 3 of 3 acceptance tests passing (at commit 0ld).\n\n## Goal\n\nG.\n",
        encoding="utf-8",
    )
    write_plan(project, "delta", priority="Medium", deps="gamma")
    (project / ".planner").mkdir()
    (project / ".planner" / "evidence.json").write_text(
        json.dumps(
            {
                "version": 1,
                "generated_at": "2026-11-26T04:00:00+00:00",
                "git_commit": "0123456789abcdef",
                "gateway_version": "0.1.0",
                "gateway_url": None,
                "features": {"gamma": {"passed": 3, "failed": 0, "skipped": 0, "tests": []}},
            }
        ),
        encoding="utf-8",
    )
    site = tmp_path / "site"
    result = mkdocs_build(project, site, "--strict")
    assert result.returncode == 0, result.stderr
    board = (site / "roadmap" / "board" / "index.html").read_text(encoding="utf-8")
    completed = board.split("Completed (1)")[-1]
    assert 'href="../../design/gamma/"' in completed
    delta = (site / "roadmap" / "plans" / "delta" / "index.html").read_text(encoding="utf-8")
    assert 'href="../../../design/gamma/"' in delta
    readiness = (site / "roadmap" / "readiness" / "index.html").read_text(encoding="utf-8")
    high = readiness.split('id="high"')[1].split('id="medium"')[0]  # no priority labels configured here
    assert "Gamma</a> — " in high and "3 of 3 passing" in high  # under the priority its page keeps
    page = (site / "design" / "gamma" / "index.html").read_text(encoding="utf-8")
    assert "3 of 3 acceptance tests passing (evidence recorded 2026-11-26 at commit 0123456)" in page
    assert "Completed 2026-11-20; at completion: 3 of 3" in page
    assert "md-status" not in page  # Material's page-status icon does not pick up the plan status
    assert "Acceptance tests recorded verified 2026-11-26 at commit 0123456" not in readiness
    assert "recorded on 2026-11-26 at commit 0123456" in readiness
    data = json.loads((site / "roadmap" / "roadmap.json").read_text(encoding="utf-8"))
    assert data["completed"] == [
        {
            "slug": "gamma",
            "title": "Gamma",
            "feature": "gamma",
            "priority": "High",
            "source": "docs/design/gamma.md",
            "evidence": {
                "passed": 3,
                "failed": 0,
                "skipped": 0,
                "steps_done": 0,
                "steps_total": 0,
                "progress": 1.0,
                "verified": True,
                "verdict": "warning",  # track: a design that declares no steps does not say what done means
                "regression": False,
                "stale": None,
                "summary": "3 of 3 acceptance tests passing (evidence recorded 2026-11-26 at commit 0123456)",
            },
        }
    ]


def test_many_plans_stay_out_of_the_automatic_navigation(project: Path, tmp_path: Path) -> None:
    config = MKDOCS_YML.split("nav:")[0].replace(
        "fetch_diagrams: false", "fetch_diagrams: false\n      nav_plans_limit: 1"
    )
    (project / "mkdocs.yml").write_text(config, encoding="utf-8")
    site = tmp_path / "site"
    result = mkdocs_build(project, site, "--strict")
    assert result.returncode == 0, result.stderr
    html = (site / "roadmap" / "board" / "index.html").read_text(encoding="utf-8")
    assert '<a href="../../tutorial/zeta/" class="md-nav__link">' in html  # the rest of the site is listed
    assert '<a href="../plans/alpha/" class="md-nav__link' not in html
    assert 'href="../plans/alpha/"' in html  # the plan is still linked from the board
    assert (site / "roadmap" / "plans" / "alpha" / "index.html").is_file()


def test_automatic_nav_lists_top_pages_then_folders(tmp_path: Path) -> None:
    uris = ["about.md", "index.md", "tutorial/a.md", "roadmap/index.md", "gateway/x_y/z.md"]
    files = Files([File(uri, str(tmp_path), str(tmp_path / "site"), True) for uri in uris])
    assert automatic_nav(files) == [
        "index.md",
        "about.md",
        {"Gateway": "gateway/"},
        {"Roadmap": "roadmap/"},
        {"Tutorial": "tutorial/"},
    ]


def test_a_failing_test_of_a_completed_feature_turns_the_built_site_red(
    project: Path, tmp_path: Path
) -> None:
    design = project / "docs" / "design"
    design.mkdir()
    (design / "gamma.md").write_text(
        "---\ntitle: Gamma\npriority: High\nfeature: gamma\nstatus: Completed\n---\n# Gamma\n\n"
        "Completed 2026-11-20: 3 of 3 acceptance tests passing (at commit 0ld).\n",
        encoding="utf-8",
    )
    (project / ".planner").mkdir()
    tests = [{"name": f"t.py::test_{n}", "outcome": "passed"} for n in ("a", "b")]
    tests.append({"name": "t.py::test_c", "outcome": "failed"})
    (project / ".planner" / "evidence.json").write_text(
        json.dumps(
            {
                "version": 1,
                "generated_at": "2026-11-26T04:00:00+00:00",
                "git_commit": "0123456789abcdef",
                "gateway_version": "0.1.0",
                "gateway_url": None,
                "features": {"gamma": {"passed": 2, "failed": 1, "skipped": 0, "tests": tests}},
            }
        ),
        encoding="utf-8",
    )
    site = tmp_path / "site"
    result = mkdocs_build(project, site, "--strict")
    assert result.returncode == 0, result.stderr

    def page(path: str) -> str:
        return (site / path / "index.html").read_text(encoding="utf-8")

    for path in ("roadmap", "roadmap/board", "roadmap/readiness", "roadmap/priorities"):
        assert "Regression: 1 completed feature no longer passes its acceptance tests" in page(path), path
    assert "Completed (1, 1 regressed)" in page("roadmap/board")
    assert "not ready</span>" in page("roadmap/readiness")
    gamma = page("design/gamma")
    assert "planner-flag-regression" in gamma and "regression: 1 of 3 acceptance tests fail" in gamma
    assert "Completed 2026-11-20; at completion: 3 of 3" in gamma
