"""The page builders: one jinja2 template per page, compiled once per `Renderer`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2

from planner.config import PlannerConfig
from planner.forecast import Dates, forecast
from planner.model import Design, Plan
from planner.schedule import Slot, working_day

from . import diagrams
from .links import LinkStyle, href, md_link
from .roadmap import FeatureState, Roadmap, sort_plans, verified_when

ROADMAP_DIR = "roadmap"
# The overview pages in navigation order: source name and navigation title.
OVERVIEW_PAGES = (
    ("index.md", "Overview"),
    ("priorities.md", "Priorities"),
    ("board.md", "Board"),
    ("dependencies.md", "Dependencies"),
    ("timeline.md", "Timeline"),
    ("readiness.md", "Readiness"),
    ("changes.md", "What changed"),
)
FEED = "feed.xml"  # the Atom feed of status changes, beside the pages
FEED_ENTRIES = 50
NEXT_UP = 5

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# The line `planner complete` writes under a design page's title: `Completed 2026-11-26: 8 of 8 ...`.
_FROZEN = re.compile(r"^Completed (?P<date>\d{4}-\d{2}-\d{2}): (?P<rest>.+)$")


def overview_pages(config: PlannerConfig) -> tuple[tuple[str, str], ...]:
    """The overview pages this project shows, with their navigation titles: the readiness page under its
    configured title, or left out when turned off."""
    return tuple(
        (name, config.readiness.title if name == "readiness.md" else title)
        for name, title in OVERVIEW_PAGES
        if name != "readiness.md" or config.readiness.enabled
    )


def archive_page(state: str) -> str:
    """The roadmap-relative page listing the plans closed with `state`: `archive/rejected.md`."""
    return f"archive/{diagrams.css_name(state)}.md"


def status_counts(roadmap: Roadmap) -> list[dict[str, Any]]:
    """Overview rows: each lifecycle state, each closing state, then any invalid status, with counts per
    priority. Completed designs count under the completed state with the priority their page keeps."""
    config = roadmap.config
    entries = [(p.status, p.priority) for p in roadmap.plans]
    entries += [(config.completed_status, d.priority or "") for d in roadmap.designs]
    invalid = sorted({status for status, _ in entries} - set(config.all_statuses))
    rows = []
    for status in (*config.all_statuses, *invalid):
        mine = [priority for s, priority in entries if s == status]
        if status in config.closed_statuses and not mine:
            continue  # an empty closing state is noise on the overview; its archive page still exists
        rows.append(
            {
                "status": status,
                "closed": status in config.closed_statuses,
                "invalid": status in invalid,
                "by_priority": {pr: mine.count(pr) for pr in config.priorities},
                "total": len(mine),
            }
        )
    return rows


def plan_src(slug: str, roadmap_dir: str = ROADMAP_DIR) -> str:
    return f"{roadmap_dir}/plans/{slug}.md"


def design_src(roadmap: Roadmap, slug: str, docs_dir: str) -> str:
    """The docs-relative source of a completed design page."""
    design_dir = Path(roadmap.config.design_dir)
    try:
        return design_dir.relative_to(docs_dir).joinpath(f"{slug}.md").as_posix()
    except ValueError:  # design pages outside docs/: link by their repository path
        return design_dir.joinpath(f"{slug}.md").as_posix()


class Renderer:
    """Turns a `Roadmap` into `{docs-relative path: content}`; the templates are compiled once.

    `style` says how diagram links are addressed; `diagrams_note` (when set) is shown above each
    diagram, e.g. to say the diagram library has not been fetched yet.
    """

    def __init__(
        self,
        style: LinkStyle = LinkStyle.MARKDOWN,
        *,
        diagrams_note: str | None = None,
        docs_dir: str = "docs",
        roadmap_dir: str = ROADMAP_DIR,
        site_url: str | None = None,
    ) -> None:
        self.style = style
        # The feed's links must be absolute for feed readers: built from mkdocs' `site_url` when set.
        self.site_url = site_url.rstrip("/") + "/" if site_url else None
        self.diagrams_note = diagrams_note
        self.docs_dir = docs_dir
        self.roadmap_dir = roadmap_dir
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("planner.render", "templates"),
            autoescape=False,  # Markdown, escaped explicitly with the `md` and `html` filters
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["md"] = md_escape
        self.env.filters["html"] = html_text
        self.env.filters["css"] = diagrams.css_name
        self.templates = {name: self.env.get_template(f"{name[:-3]}.md.j2") for name, _ in OVERVIEW_PAGES}
        self.plan_template = self.env.get_template("plan.md.j2")
        self.archive_template = self.env.get_template("archive.md.j2")
        self.archive_index = self.env.get_template("archive_index.md.j2")
        self.design_box = self.env.get_template("design_status.md.j2")

    def render(self, roadmap: Roadmap) -> dict[str, str]:
        """Every page of the roadmap: overview pages first, then one page per plan, then the archive
        pages of the closing states, then roadmap.json."""
        slots, dates = forecast(
            roadmap.open_plans, roadmap.designs, roadmap.history, roadmap.config, roadmap.today
        )
        base = self._context(roadmap, slots, dates)
        pages: dict[str, str] = {}
        for name, _ in overview_pages(roadmap.config):
            src = f"{self.roadmap_dir}/{name}"
            pages[src] = self.templates[name].render(base, **self._page_helpers(roadmap, src))
        index_src = f"{self.roadmap_dir}/archive/index.md"
        archive = {index_src: self.archive_index.render(base, **self._page_helpers(roadmap, index_src))}
        for state in roadmap.config.closed_statuses:
            src = f"{self.roadmap_dir}/{archive_page(state)}"
            archive[src] = self.archive_template.render(
                base, state=state, closed=roadmap.closed_plans[state], **self._page_helpers(roadmap, src)
            )
        for plan in roadmap.plans:
            src = plan_src(plan.slug, self.roadmap_dir)
            pages[src] = self.plan_template.render(
                base, plan=plan, body=self._plan_body(roadmap, plan, src), **self._page_helpers(roadmap, src)
            )
        pages.update(archive)
        pages[f"{self.roadmap_dir}/roadmap.json"] = roadmap_json(roadmap, slots, self, dates)
        pages[f"{self.roadmap_dir}/{FEED}"] = atom_feed(roadmap, self)
        return pages

    def design_page(self, roadmap: Roadmap, design: Design, text: str, src: str) -> str:
        """A completed feature's page as written, with its live verification under the title.

        The page keeps the numbers recorded when it was completed (history); the box above them says what
        the evidence says now, so a regression shows on the page that claims the feature is done.
        """
        box = self.design_box.render(
            self._context_light(roadmap), design=design, **self._page_helpers(roadmap, src)
        )
        lines = text.split("\n")
        h1 = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
        if h1 is None:
            return box + "\n" + text
        rest = lines[h1 + 1 :]
        for i, line in enumerate(rest):
            if line.strip():
                match = _FROZEN.match(line)
                if match:  # the numbers recorded at completion: history, not the current state
                    rest[i] = f"Completed {match['date']}; at completion: {match['rest']}"
                break
        return "\n".join([*lines[: h1 + 1], "", box.rstrip("\n"), *rest])

    def _context_light(self, roadmap: Roadmap) -> dict[str, Any]:
        return {
            "roadmap": roadmap,
            "config": roadmap.config,
            "state": roadmap.state,
            "verified_when": verified_when,
            "completed_status": roadmap.config.completed_status,
        }

    def _context(self, roadmap: Roadmap, slots: list[Slot], dates: dict[str, Dates]) -> dict[str, Any]:
        config = roadmap.config
        completed = config.completed_status
        plans_by_priority = {
            priority: sort_plans([p for p in roadmap.open_plans if p.priority == priority], config.priorities)
            for priority in config.priorities
        }
        others = [p for p in roadmap.open_plans if p.priority not in config.priorities]
        designs_by_priority = {
            priority: [d for d in roadmap.designs if d.priority == priority] for priority in config.priorities
        }
        by_slug = {s.slug: s for s in slots}
        started = {completed, config.in_progress_status}
        next_up = [s for s in sorted(slots, key=lambda s: (s.start, s.lane or 0)) if s.status not in started][
            :NEXT_UP
        ]
        # Every feature still in scope: open plans and completed designs (closed plans are archived).
        slugs = [p.slug for p in roadmap.open_plans] + [d.slug for d in roadmap.designs]
        states = [roadmap.state(slug) for slug in slugs]
        completed_count = sum(1 for p in roadmap.open_plans if p.status == completed) + len(roadmap.designs)
        readiness = {
            priority: [p.slug for p in plans_by_priority.get(priority, [])]
            + [d.slug for d in designs_by_priority.get(priority, [])]
            for priority in config.readiness_priorities
        }
        ready_slugs = [slug for slugs_ in readiness.values() for slug in slugs_]
        return {
            "roadmap": roadmap,
            "config": config,
            "completed_status": completed,
            "statuses": config.lifecycle,
            "count_rows": status_counts(roadmap),
            "plans_by_priority": plans_by_priority,
            "designs_by_priority": designs_by_priority,
            "designs_without_priority": [d for d in roadmap.designs if d.priority not in config.priorities],
            "other_plans": sort_plans(others, config.priorities),
            "priority_meaning": config.priority_labels,
            "slots": slots,
            "slot_for": by_slug,
            "dates": dates,
            "today": roadmap.today,
            "changes": roadmap.history.newest_first(),
            "title_of": lambda slug: diagrams.plan_or_design_title(
                slug, roadmap.plans_by_slug, roadmap.designs_by_slug
            ),
            "feed": FEED,
            "next_up": next_up,
            "in_progress": sort_plans(
                [p for p in roadmap.open_plans if p.status == config.in_progress_status], config.priorities
            ),
            "steps_done": sum(s.verdict.steps_done for s in states if s.verdict is not None),
            "steps_total": sum(s.verdict.steps_total for s in states if s.verdict is not None),
            "tests_passed": sum(s.verdict.passed for s in states if s.verdict is not None),
            "tests_failed": sum(s.verdict.failed for s in states if s.verdict is not None),
            "completed_count": completed_count,
            "feature_count": len(slugs),
            "readiness": readiness,
            "ready_count": sum(1 for slug in ready_slugs if roadmap.state(slug).verified),
            "ready_total": len(ready_slugs),
            "readiness_priorities": config.readiness_priorities,
            "readiness_title": config.readiness.title,
            "drift": [r for r in roadmap.report.features if r.verdict in ("error", "warning")]
            if roadmap.report is not None
            else [],
            "closed_statuses": config.closed_statuses,
            "diagrams_note": self.diagrams_note,
            "state": roadmap.state,
            "verified_when": verified_when,
            "archive_page": archive_page,
            "date_of": lambda offset: working_day(roadmap.today, offset).isoformat(),
            "last_day_of": lambda slot: working_day(roadmap.today, max(slot.end - 1, slot.start)).isoformat(),
            "percent": lambda part, whole: f"{100 * part / whole:.0f}%" if whole else "—",
        }

    def _page_helpers(self, roadmap: Roadmap, src: str) -> dict[str, Any]:
        """Link helpers bound to the page being rendered."""
        plans, designs = roadmap.plans_by_slug, roadmap.designs_by_slug

        def target(slug: str) -> str | None:
            if slug in plans:
                return plan_src(slug, self.roadmap_dir)
            if slug in designs:
                return design_src(roadmap, slug, self.docs_dir)
            return None

        def link(slug: str) -> str:
            """A Markdown link to a plan or design by its title; plain text for an unknown slug."""
            to = target(slug)
            title = diagrams.plan_or_design_title(slug, plans, designs)
            if to is None:
                return f"{md_escape(slug)} (unknown)"
            return f"[{md_escape(title)}]({md_link(src, to)})"

        def url(slug: str) -> str:
            to = target(slug)
            return href(src, to, self.style) if to is not None else "#"

        def a(slug: str) -> str:
            """`link` for raw HTML, where mkdocs rewrites nothing: the address the built page will have."""
            to = target(slug)
            if to is None:
                return f"{html_escape(slug)} (unknown)"
            title = diagrams.plan_or_design_title(slug, plans, designs)
            return f'<a href="{html_escape(href(src, to, self.style))}">{html_escape(title)}</a>'

        def page(name: str) -> str:
            return md_link(src, f"{self.roadmap_dir}/{name}")

        def page_href(name: str) -> str:
            return href(src, f"{self.roadmap_dir}/{name}", self.style)

        return {
            "link": link,
            "a": a,
            "url": url,
            "page": page,
            "page_href": page_href,
            "dependency_graph": lambda: diagrams.dependency_graph(roadmap, url),
            "gantt": lambda slots, dates: diagrams.gantt(roadmap, slots, dates, url),
        }

    def _plan_body(self, roadmap: Roadmap, plan: Plan, src: str) -> str:
        """The plan's document without its H1 (the page supplies it), its relative links re-pointed."""
        lines = plan.body.splitlines()
        for i, line in enumerate(lines):
            if line.strip():
                if line.startswith("# "):
                    del lines[i]
                break
        return "\n".join(self._relink(roadmap, plan, src, lines)).strip() + "\n"

    def _relink(self, roadmap: Roadmap, plan: Plan, src: str, lines: list[str]) -> Iterator[str]:
        """Links written relative to plans/ point to the same files from the page's place in the site."""
        root = roadmap.config.root
        docs = root / self.docs_dir
        plans_dir = roadmap.config.plans_path
        in_fence = False

        def fix(match: re.Match[str]) -> str:
            target = match.group(2)
            if target.startswith(("#", "/")) or _SCHEME.match(target):
                return match.group(0)
            path, _, anchor = target.partition("#")
            resolved = Path(os.path.normpath(plan.path.parent / path))
            fragment = f"#{anchor}" if anchor else ""
            if resolved.parent == plans_dir and resolved.suffix == ".md":
                slug = resolved.stem.split("-", 1)[-1]
                if slug in roadmap.plan_slugs:
                    new = md_link(src, plan_src(slug, self.roadmap_dir))
                    return f"{match.group(1)}{new}{fragment}{match.group(3)}"
            if resolved.is_relative_to(docs):
                new = md_link(src, resolved.relative_to(docs).as_posix())
                return f"{match.group(1)}{new}{fragment}{match.group(3)}"
            # Outside the site (source files, README): name it instead of linking to a page that is not built.
            text = match.group(1)[match.group(1).index("[") + 1 : -2]
            shown = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else path
            return f"{text} (`{shown}`)"

        for line in lines:
            if _FENCE.match(line):
                in_fence = not in_fence
            yield line if in_fence or "](" not in line else _LINK.sub(fix, line)


def md_escape(text: object) -> str:
    """Text that Markdown shows as written, including inside table cells."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def html_escape(text: object) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def html_text(text: object) -> str:
    """Text for the pages' HTML blocks, on one line: a blank line would end the block in Markdown."""
    return html_escape(text).replace("\n", " ")


def state_json(state: FeatureState) -> dict[str, Any]:
    v, r = state.verdict, state.result
    return {
        "passed": r.passed if r else None,
        "failed": r.failed if r else None,
        "skipped": r.skipped if r else None,
        "steps_done": v.steps_done if v else None,
        "steps_total": v.steps_total if v else None,
        "progress": state.progress,
        "verified": state.verified,
        "verdict": v.verdict if v else None,
        "regression": state.regression,
        "stale": v.stale if v else None,
        "summary": state.text,
    }


def roadmap_json(
    roadmap: Roadmap, slots: list[Slot], renderer: Renderer, dates: dict[str, Dates] | None = None
) -> str:
    """Every plan's metadata, schedule, forecast and evidence, for other tools; stable order."""
    by_slug = {s.slug: s for s in slots}
    dates = dates or {}

    def forecast_entry(when: Dates | None) -> dict[str, Any] | None:
        if when is None:
            return None
        return {
            "start": when.start.isoformat(),
            "end": when.end.isoformat(),
            "started": when.started.isoformat() if when.started else None,
            "baseline_start": when.baseline_start.isoformat() if when.baseline_start else None,
            "baseline_end": when.baseline_end.isoformat() if when.baseline_end else None,
            "slip_days": when.slip,
        }

    ev = roadmap.evidence

    def plan_entry(plan: Plan) -> dict[str, Any]:
        slot = by_slug.get(plan.slug)
        return {
            "slug": plan.slug,
            "title": plan.title,
            "status": plan.status,
            "priority": plan.priority,
            "complexity": plan.complexity,
            "estimate": plan.estimate_text or None,
            "estimate_days": (
                {"low": plan.estimate.low_days, "high": plan.estimate.high_days} if plan.estimate else None
            ),
            "dependencies": list(plan.dependencies),
            "dependents": list(roadmap.dependents.get(plan.slug, ())),
            "feature": plan.feature,
            "owner": plan.owner,
            "updated": plan.updated,
            "source": _relative(plan.path, roadmap.config.root),
            "page": plan_src(plan.slug, renderer.roadmap_dir),
            "schedule": (
                {"lane": slot.lane, "start_day": slot.start, "end_day": slot.end}
                if slot is not None
                else None
            ),
            "forecast": forecast_entry(dates.get(plan.slug)),
            "evidence": state_json(roadmap.state(plan.slug)),
            **({"superseded_by": plan.superseded_by} if plan.superseded_by else {}),
        }

    data = {
        "version": 1,
        "evidence": (
            {
                "generated_at": ev.generated_at,
                "git_commit": ev.git_commit,
                "gateway_version": ev.gateway_version,
            }
            if ev is not None
            else None
        ),
        "lanes": roadmap.config.lanes,
        "plans": [plan_entry(p) for p in roadmap.plans],
        "completed": [
            {
                "slug": d.slug,
                "title": d.title,
                "feature": d.feature,
                "priority": d.priority,
                "source": _relative(d.path, roadmap.config.root),
                "evidence": state_json(roadmap.state(d.slug)),
            }
            for d in roadmap.designs
        ],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def page_url(renderer: Renderer, roadmap: Roadmap, slug: str) -> str:
    """A plan's or design's page as the site serves it, absolute when the site URL is known."""
    if slug in roadmap.plans_by_slug:
        src = plan_src(slug, renderer.roadmap_dir)
    elif slug in roadmap.designs_by_slug:
        src = design_src(roadmap, slug, renderer.docs_dir)
    else:
        src = f"{renderer.roadmap_dir}/changes.md"
    path = src[:-3] + "/" if renderer.style is LinkStyle.DIRECTORY else src[:-3] + ".html"
    return (renderer.site_url or "/") + path


def atom_feed(roadmap: Roadmap, renderer: Renderer) -> str:
    """An Atom feed (RFC 4287) of the roadmap's status changes from git history, newest first.

    Entry ids are stable (`tag:` URIs from the commit and the plan), so a reader shows each change once.
    """
    changes = roadmap.history.newest_first(FEED_ENTRIES)
    updated = changes[0].when.isoformat() if changes else f"{roadmap.today.isoformat()}T00:00:00Z"
    home = (renderer.site_url or "/") + (
        f"{renderer.roadmap_dir}/"
        if renderer.style is LinkStyle.DIRECTORY
        else f"{renderer.roadmap_dir}/index.html"
    )
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        "  <title>Roadmap status changes</title>",
        # An Atom id must be an absolute IRI: the site's address when known, else a tag URI of the history.
        f"  <id>{xml_escape(home) if renderer.site_url else _feed_tag(roadmap)}</id>",
        f'  <link rel="alternate" type="text/html" href="{xml_escape(home)}"/>',
        f"  <updated>{updated}</updated>",
        "  <generator>planner</generator>",
    ]
    for change in changes:
        title = diagrams.plan_or_design_title(change.slug, roadmap.plans_by_slug, roadmap.designs_by_slug)
        moved = f"{change.previous} → {change.status}" if change.previous else f"proposed as {change.status}"
        summary = f"{moved} in commit {change.commit[:12]}: {change.subject}"
        url = page_url(renderer, roadmap, change.slug)
        lines += [
            "  <entry>",
            f"    <title>{xml_escape(f'{title}: {moved}')}</title>",
            f"    <id>tag:planner,{change.when.date().isoformat()}:{xml_escape(change.slug)}/"
            f"{change.commit[:12]}</id>",
            f'    <link rel="alternate" type="text/html" href="{xml_escape(url)}"/>',
            f"    <updated>{change.when.isoformat()}</updated>",
            "    <author><name>git</name></author>",
            f"    <summary>{xml_escape(summary)}</summary>",
            "  </entry>",
        ]
    lines.append("</feed>")
    return "\n".join(lines) + "\n"


def _feed_tag(roadmap: Roadmap) -> str:
    first = roadmap.history.changes[0].when.date() if roadmap.history.changes else roadmap.today
    project = xml_escape(diagrams.css_name(roadmap.config.root.name))
    return f"tag:planner,{first.isoformat()}:{project}/roadmap"


def xml_escape(text: str) -> str:
    return html_escape(text).replace("'", "&apos;")


def _relative(path: Path, root: Path) -> str:
    for base in (root, root.resolve()):
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return path.as_posix()


def render_pages(roadmap: Roadmap, style: LinkStyle = LinkStyle.MARKDOWN) -> dict[str, str]:
    """The roadmap's pages with a one-off renderer (the plugin keeps one renderer for all builds)."""
    return Renderer(style).render(roadmap)


def write_pages(
    roadmap: Roadmap,
    out: Path,
    pages: dict[str, str],
    docs_dir: str = "docs",
    renderer: Renderer | None = None,
) -> list[Path]:
    """Write `pages` under `out`, plus copies of the completed designs' pages they link to (with their
    live verification when `renderer` is given).

    Each file is written to a temporary name and renamed, so a reader never sees half a page.
    """
    written = []
    files = dict(pages)
    for design in roadmap.designs:
        src = design_src(roadmap, design.slug, docs_dir)
        try:
            text = design.path.read_text(encoding="utf-8")
        except OSError:
            continue
        files[src] = renderer.design_page(roadmap, design, text, src) if renderer is not None else text
    for rel, content in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
