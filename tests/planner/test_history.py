"""Status history from git and the forecast on it: real starts, remaining estimates, baselines, slips."""

from __future__ import annotations

import os
import subprocess
from datetime import date
from pathlib import Path

from plan_docs import legacy_text, plan_text, project

from planner.config import load_config
from planner.forecast import forecast
from planner.history import read_history
from planner.render.roadmap import load_roadmap


def commit(root: Path, when: str, message: str) -> None:
    """Commit everything with author and committer dates set to ``when`` (noon UTC)."""
    stamp = f"{when}T12:00:00+00:00"
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": stamp,
        "GIT_COMMITTER_DATE": stamp,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", message], cwd=root, check=True, env=env)


def set_status(root: Path, name: str, old: str, new: str) -> None:
    path = root / "plans" / name
    path.write_text(path.read_text().replace(f"status: {old}", f"status: {new}"))


def repo(tmp_path: Path) -> Path:
    root = project(
        tmp_path,
        {
            "HIGH-cache.md": plan_text("Cache", status="Planned", estimate="2 weeks"),
            "HIGH-limits.md": plan_text("Limits", status="Proposed", estimate="1 week"),
            "LOW-old.md": legacy_text("Old", status="Proposed"),
        },
    )
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    commit(root, "2026-11-02", "plans")  # Monday
    set_status(root, "HIGH-cache.md", "Planned", "In Progress")
    commit(root, "2026-11-09", "start the cache")  # Monday, a week later
    path = root / "plans" / "LOW-old.md"
    path.write_text(path.read_text().replace("**Status:** Proposed", "**Status:** Planned"))
    commit(root, "2026-11-10", "plan the old one")
    return root


def test_the_history_records_each_status_a_plan_entered_with_its_commit(tmp_path: Path) -> None:
    history = read_history(load_config(repo(tmp_path)))
    cache = [(c.previous, c.status, c.when.date().isoformat(), c.subject) for c in history.of("cache")]
    assert cache == [
        (None, "Planned", "2026-11-02", "plans"),
        ("Planned", "In Progress", "2026-11-09", "start the cache"),
    ]
    assert history.entered("old", "Planned") == date(2026, 11, 10)  # the legacy **Status:** form too
    assert [c.slug for c in history.newest_first(1)] == ["old"]


def test_outside_git_the_history_is_empty(tmp_path: Path) -> None:
    root = project(tmp_path, {"HIGH-cache.md": plan_text("Cache")})
    assert read_history(load_config(root)).changes == ()


def test_in_progress_work_starts_at_its_real_start_with_the_rest_of_its_estimate(tmp_path: Path) -> None:
    root = repo(tmp_path)
    today = date(2026, 11, 16)  # Monday: 5 working days after the cache started
    roadmap = load_roadmap(load_config(root), today=today)
    _, dates = forecast(roadmap.open_plans, roadmap.designs, roadmap.history, roadmap.config, today)
    cache = dates["cache"]
    assert cache.started == date(2026, 11, 9) and cache.start == date(2026, 11, 9)
    assert cache.end == date(2026, 11, 20)  # 10 working days in all: 5 spent, 5 left
    # Baseline: the forecast the day it was first planned (2 Nov, 10 working days): ends 13 Nov.
    assert (cache.baseline_start, cache.baseline_end) == (date(2026, 11, 2), date(2026, 11, 13))
    assert cache.slip == 5  # it started a week after it was planned
    assert dates["limits"].baseline_end is None and dates["limits"].slip is None  # never planned


def test_work_past_its_estimate_keeps_one_more_day_and_shows_the_slip(tmp_path: Path) -> None:
    root = repo(tmp_path)
    today = date(2026, 12, 1)  # 16 working days after the cache started, on a 10-day estimate
    roadmap = load_roadmap(load_config(root), today=today)
    slots, dates = forecast(roadmap.open_plans, roadmap.designs, roadmap.history, roadmap.config, today)
    assert dates["cache"].end == today
    assert next(s for s in slots if s.slug == "cache").spent == 16
    assert dates["cache"].slip == working_days_late(date(2026, 11, 13), today)


def working_days_late(baseline_end: date, end: date) -> int:
    from planner.schedule import working_days_between

    return working_days_between(baseline_end, end)


def test_the_timeline_page_shows_baselines_slips_today_and_a_legend(tmp_path: Path) -> None:
    from planner.render.pages import render_pages

    root = repo(tmp_path)
    pages = render_pages(load_roadmap(load_config(root), today=date(2026, 11, 16)))
    timeline = pages["roadmap/timeline.md"]
    chart = timeline.split("```mermaid")[1].split("```")[0]
    assert "todayMarker stroke-width" in chart and "todayMarker off" not in chart
    assert "Cache :active, crit, t_cache, 2026-11-09, 2026-11-23" in chart
    assert "Cache (baseline) :done, b_cache, 2026-11-02, 2026-11-16" in chart
    assert "**Legend:**" in timeline
    assert "| 2026-11-09 (started) | 2026-11-20 | — | 2026-11-13 |" in timeline and "+5 late" in timeline


def test_the_changes_page_and_the_atom_feed_list_status_changes_newest_first(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from planner.render.links import LinkStyle
    from planner.render.pages import Renderer

    root = repo(tmp_path)
    roadmap = load_roadmap(load_config(root), today=date(2026, 11, 16))
    pages = Renderer(LinkStyle.DIRECTORY, site_url="https://roadmap.example/").render(roadmap)
    changes = pages["roadmap/changes.md"]
    rows = [line for line in changes.splitlines() if line.startswith("| 2026-")]
    assert rows[0].startswith("| 2026-11-10 | [Old]") and "plan the old one" in rows[0]
    assert "In Progress" in rows[1] and "start the cache" in rows[1]
    assert "[Atom feed](feed.xml)" in changes
    atom = "{http://www.w3.org/2005/Atom}"
    feed = ET.fromstring(pages["roadmap/feed.xml"])
    assert feed.findtext(f"{atom}id") == "https://roadmap.example/roadmap/"
    entries = feed.findall(f"{atom}entry")
    assert len(entries) == 5  # three plans created, one started, one planned
    first = entries[0]
    assert first.findtext(f"{atom}title") == "Old: Proposed → Planned"
    assert first.findtext(f"{atom}updated") == "2026-11-10T12:00:00+00:00"
    link = first.find(f"{atom}link")
    assert link is not None and link.get("href") == "https://roadmap.example/roadmap/plans/old/"
    assert len({e.findtext(f"{atom}id") for e in entries}) == 5  # stable, distinct ids
