"""The built site in headless Chromium: diagrams drawn as SVG, plan links resolving, a clean console.

Locally these tests skip when Debian's chromium or the fetched diagram library is missing; in CI (`CI` set,
where scripts/test installs chromium and fetches mermaid) a missing one fails them instead, so a CI run can
never pass with the browser tests silently skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from cdp import Page, chromium_page, find_chromium
from site_fixtures import REPO

from planner.render.assets import mermaid_path

CHROMIUM = find_chromium()
# How long mermaid may take to draw a page's diagrams on a busy machine; only a broken page waits this long.
DRAW_SECONDS = 60.0

LINKS = """Array.from(document.querySelectorAll('article a[href], article svg a'))
  .map(a => a.href && a.href.baseVal !== undefined ? new URL(a.href.baseVal, location.href).href : a.href)
  .filter(h => h.includes('/roadmap/plans/') || h.includes('/design/'))"""


def open_plan_titles() -> list[str]:
    """The titles of the repository's open plans (plans/*.md but the README), in file order; none once all
    are completed."""
    titles = []
    for path in sorted((REPO / "plans").glob("*.md")):
        if path.name == "README.md":  # the template's guide, not a plan
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("title:"):
                titles.append(line.split(":", 1)[1].strip().strip("'\""))
                break
    return titles


# roadmap.js marks <html data-planner-diagrams> and dispatches "planner:diagrams" when a drawing is over:
# resolves with how it ended ("drawn", "failed", "none", "unavailable") once it is.
DIAGRAMS_SETTLED = """new Promise(resolve => {
  const state = document.documentElement.getAttribute('data-planner-diagrams');
  if (state !== null && state !== 'drawing') { resolve(state); return; }
  document.addEventListener('planner:diagrams', event => resolve(event.detail), { once: true });
})"""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or in CI fail it: CI has everything installed, so something missing is a failure."""
    if in_ci():
        pytest.fail(f"{reason}; in CI the browser tests must run, not skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site(served_site: str, repo_site: Path) -> str:
    if CHROMIUM is None:
        unavailable("needs Debian's chromium (scripts/test installs it)")
    if not (repo_site / "assets" / "planner" / "mermaid.min.js").is_file():
        unavailable(
            f"diagram library not fetched: run `planner fetch-diagrams` (expected {mermaid_path(REPO)})"
        )
    return served_site


def open_page(page: Page, url: str) -> str:
    """Load `url` and wait until its diagrams are drawn (or it has none); returns how the drawing ended.

    Waiting for that event, not for a fixed time, means every console error of loading and drawing the page
    has arrived when this returns: Chromium reports events before the answer that follows them.
    """
    page.goto(url)
    return str(page.evaluate(DIAGRAMS_SETTLED, timeout=DRAW_SECONDS))


def rendered_diagrams(page: Page, state: str) -> int:
    """Every diagram on the page is an SVG; returns how many there are."""
    assert state == "drawn", (state, page.errors)
    total = page.evaluate("document.querySelectorAll('.planner-mermaid').length")
    assert total > 0
    drawn = page.evaluate("document.querySelectorAll('.planner-mermaid svg').length")
    assert drawn == total, "a diagram did not render"
    return int(total)


def assert_links_resolve(urls: list[str]) -> None:
    assert urls, "no plan links found"
    with httpx.Client(timeout=10) as client:
        for url in sorted(set(urls)):
            assert url.startswith("http://127.0.0.1:"), url
            assert client.get(url).status_code == 200, url


@pytest.mark.parametrize("name", ["board", "dependencies", "timeline"])
def test_page_renders_without_console_errors(site: str, name: str) -> None:
    assert CHROMIUM is not None
    with chromium_page(CHROMIUM) as page:
        state = open_page(page, f"{site}roadmap/{name}/")
        titles = open_plan_titles()
        if name == "board":
            assert state == "none"
        elif name == "timeline" and not titles:
            # Every feature completed: the timeline says so instead of drawing an empty chart.
            assert state == "none"
            assert "Nothing is left to schedule" in page.evaluate(
                "document.querySelector('article').innerText"
            )
        else:
            rendered_diagrams(page, state)
            svg = page.evaluate("document.querySelector('.planner-mermaid svg').outerHTML")
            if name == "timeline":
                assert titles[0] in svg  # an open plan: completed ones leave the timeline
        links = page.evaluate(LINKS)
        assert_links_resolve(links)
        if name == "board":
            columns = page.evaluate(
                "Array.from(document.querySelectorAll('.planner-column h3')).map(h => h.textContent)"
            )
            assert [c.split(" (")[0] for c in columns] == ["Proposed", "Planned", "In Progress", "Completed"]
        if name == "dependencies":
            # every plan node is a link to its page
            nodes = page.evaluate("document.querySelectorAll('.planner-mermaid svg a').length")
            assert nodes >= 13
        assert page.errors == []
        requested = [
            e["params"]["request"]["url"]
            for e in page.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
        assert all(u.startswith(site) or u.startswith("data:") for u in requested)


def test_dark_mode_redraws_diagrams(site: str) -> None:
    assert CHROMIUM is not None
    with chromium_page(CHROMIUM) as page:
        rendered_diagrams(page, open_page(page, f"{site}roadmap/dependencies/"))
        # Listen first, then switch: the redraw's end is the next "planner:diagrams" event.
        redrawn = page.evaluate(
            """new Promise(resolve => {
              document.addEventListener('planner:diagrams', event => resolve(event.detail), { once: true });
              document.body.setAttribute('data-md-color-scheme', 'slate');
            })""",
            timeout=DRAW_SECONDS,
        )
        rendered_diagrams(page, redrawn)
        assert page.errors == []


def test_a_regression_is_a_red_card_in_both_schemes(tmp_path: Path) -> None:
    """A completed feature whose test fails: red card on the board, readable in light and dark mode."""
    import functools
    import http.server
    import json
    import threading

    from site_fixtures import mkdocs_build
    from test_site_build import MKDOCS_YML, write_plan

    assert CHROMIUM is not None
    root = tmp_path / "project"
    (root / "plans").mkdir(parents=True)
    (root / "docs" / "design").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "fixture"\n')
    (root / "mkdocs.yml").write_text(MKDOCS_YML.replace("  - Missing: nowhere/\n", ""), encoding="utf-8")
    (root / "docs" / "index.md").write_text("# Home\n", encoding="utf-8")
    (root / "docs" / "design" / "cache.md").write_text(
        "---\ntitle: Cache\npriority: High\nstatus: Completed\n---\n# Cache\n", encoding="utf-8"
    )
    write_plan(root, "alpha")
    (root / ".planner").mkdir()
    (root / ".planner" / "evidence.json").write_text(
        json.dumps(
            {
                "version": 1,
                "generated_at": "2026-11-26T04:00:00+00:00",
                "git_commit": "0123456789abcdef",
                "gateway_version": "0.1.0",
                "gateway_url": None,
                "features": {"cache": {"passed": 7, "failed": 1, "skipped": 0, "tests": []}},
            }
        )
    )
    site = tmp_path / "site"
    assert mkdocs_build(root, site).returncode == 0

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    card = "document.querySelector('.planner-column li:has(.planner-flag-regression)')"
    try:
        with chromium_page(CHROMIUM) as page:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/roadmap/board/")
            assert page.evaluate(f"{card} !== null")
            assert "Cache" in page.evaluate(f"{card}.textContent")
            for scheme, background in (("default", "rgb(255, 235, 238)"), ("slate", "rgb(74, 16, 16)")):
                page.evaluate(f"document.body.setAttribute('data-md-color-scheme', '{scheme}')")
                colours = "[s.backgroundColor, s.borderTopColor]"
                style = page.evaluate(
                    f"(() => {{ const s = getComputedStyle({card}); return {colours}; }})()"
                )
                assert style == [
                    background,
                    "rgb(198, 40, 40)" if scheme == "default" else "rgb(239, 83, 80)",
                ]
                page.screenshot(tmp_path / f"board-{scheme}.png")
            assert page.errors == []
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
