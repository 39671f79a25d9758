"""The mkdocs plugin: the roadmap's pages generated in memory from plans/, docs/design/ and the evidence.

Enabled in mkdocs.yml as `plugins: [search, planner]`. Nothing is written into docs/: each page is an
mkdocs 1.6 generated file. While serving, plans/ and the evidence file are watched, so an edited plan
shows up on reload. Problems are logged with the same messages as `planner validate`; errors are logged
as warnings so `mkdocs build --strict` fails on an invalid plan while plain `mkdocs serve` still shows the
site. A completed feature's design page gets its live verification under its title, and its `status:` is
kept from Material's page-status icons. Navigation entries naming a folder (`- Tutorial: tutorial/`) are
expanded to the pages in it, so pages added later appear without editing mkdocs.yml.
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path
from typing import Any

from mkdocs.config import base
from mkdocs.config import config_options as c
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.livereload import LiveReloadServer
from mkdocs.plugins import BasePlugin, get_plugin_logger
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from pymdownx.superfences import fence_div_format

from planner.config import ConfigError, PlannerConfig, load_config
from planner.evidence import EVIDENCE_PATH
from planner.model import Design
from planner.problems import format_text
from planner.render import Renderer, Roadmap, load_roadmap
from planner.render.assets import (
    FETCH_HINT,
    MERMAID_SITE_PATH,
    SCRIPT_SITE_PATH,
    STYLE_SITE_PATH,
    AssetError,
    fetch_mermaid,
    mermaid_path,
    packaged_text,
)
from planner.render.links import LinkStyle
from planner.render.pages import OVERVIEW_PAGES, design_src, overview_pages

log = get_plugin_logger(__name__)

# Extensions the generated pages use (admonitions, the board's HTML columns, checklists, tables).
REQUIRED_EXTENSIONS = (
    "admonition",
    "md_in_html",
    "tables",
    "attr_list",
    "pymdownx.details",
    "pymdownx.tasklist",
)
_INDEX_LINK = re.compile(r"\]\(([\w.-]+\.md)(?:#[^)]*)?\)")
MERMAID_FENCE = {"name": "mermaid", "class": "planner-mermaid", "format": fence_div_format}
# A plan page's metadata block, as the renderer writes it: HTML from its first line to its last.
_META_BLOCK = re.compile(r'^<div class="planner-meta">\n.*?^</div>\n', re.S | re.M)


class RoadmapPluginConfig(base.Config):
    roadmap_dir = c.Type(str, default="roadmap")
    fetch_diagrams = c.Type(bool, default=True)  # fetch the pinned mermaid once when it is missing
    nav_plans_limit = c.Type(int, default=50)  # list plan pages in the navigation up to this many


class RoadmapPlugin(BasePlugin[RoadmapPluginConfig]):
    """Generates the roadmap pages; see the module docstring for what each mkdocs event does."""

    def __init__(self) -> None:
        self.planner: PlannerConfig | None = None
        self.renderer: Renderer | None = None
        self.mermaid: Path | None = None
        self.fetch_tried = False
        self.roadmap: Roadmap | None = None  # read once per build in on_files
        self.design_pages: dict[str, Design] = {}  # docs-relative source → completed design
        self.plan_pages: set[str] = set()  # docs-relative sources of the generated plan pages
        # Each plan page's metadata block, set aside while mkdocs converts the page: see on_page_markdown.
        self.meta_blocks: dict[str, str] = {}
        self.meta_token = ""

    def on_startup(self, *, command: str, dirty: bool) -> None:
        # Defining on_startup keeps this instance across `mkdocs serve` rebuilds, so an offline machine
        # tries the one-time fetch once per session rather than on every rebuild.
        self.fetch_tried = False

    def on_config(self, config: MkDocsConfig) -> MkDocsConfig:
        root = Path(config.config_file_path).resolve().parent if config.config_file_path else Path.cwd()
        try:
            self.planner = load_config(root)
        except ConfigError as exc:
            raise PluginError(str(exc)) from exc
        self.mermaid = self._diagram_library(root)
        _ensure_markdown(config)
        config.extra_css.append(STYLE_SITE_PATH)
        if self.mermaid is not None:
            config.extra_javascript.append(MERMAID_SITE_PATH)
        config.extra_javascript.append(SCRIPT_SITE_PATH)
        docs_dir = Path(config.docs_dir).resolve()
        try:
            docs_rel = docs_dir.relative_to(root).as_posix()
        except ValueError:
            docs_rel = docs_dir.as_posix()
        self.renderer = Renderer(
            LinkStyle.DIRECTORY if config.use_directory_urls else LinkStyle.HTML,
            diagrams_note=None if self.mermaid is not None else FETCH_HINT,
            docs_dir=docs_rel,
            roadmap_dir=self.config.roadmap_dir,
            site_url=config.site_url,
        )
        return config

    def on_files(self, files: Files, config: MkDocsConfig) -> Files:
        assert self.planner is not None and self.renderer is not None  # set by on_config
        roadmap = load_roadmap(self.planner)
        for problem in roadmap.problems:
            level = logging.WARNING if problem.is_error else logging.INFO
            log.log(level, format_text(problem, self.planner.root))
        if roadmap.evidence_error:
            log.warning(roadmap.evidence_error)
        pages = self.renderer.render(roadmap)
        self.roadmap = roadmap
        self.design_pages = {design_src(roadmap, d.slug, self.renderer.docs_dir): d for d in roadmap.designs}
        for src_uri, content in pages.items():
            _replace(files, File.generated(config, src_uri, content=content))
        _replace(files, File.generated(config, STYLE_SITE_PATH, content=packaged_text("roadmap.css")))
        _replace(files, File.generated(config, SCRIPT_SITE_PATH, content=packaged_text("roadmap.js")))
        if self.mermaid is not None:
            _replace(files, File.generated(config, MERMAID_SITE_PATH, abs_src_path=str(self.mermaid)))
        plan_pages = [uri for uri in pages if uri.startswith(f"{self.config.roadmap_dir}/plans/")]
        self.plan_pages = set(plan_pages)
        self.meta_blocks = {}
        # Unguessable per build, so no text written in a plan can be taken for the placeholder.
        self.meta_token = f"plannermeta{secrets.token_hex(8)}"
        show_plans = len(plan_pages) <= self.config.nav_plans_limit
        nav = config.nav
        if nav is None and not show_plans:
            # mkdocs' automatic navigation would list every plan on every page: quadratic in the number
            # of plans. Spell out the same navigation without the plan pages instead.
            nav = automatic_nav(files)
        if nav is not None:
            config.nav = expand_nav(
                nav, files, self.config.roadmap_dir, show_plans, overview_pages(self.planner)
            )
        return files

    def on_page_markdown(self, markdown: str, /, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        """A completed feature's design page gets its live verification under the title.

        Its `status:` front matter is the planner's (Completed), not Material's page status (`new`,
        `deprecated`), which would otherwise draw an unexplained icon next to it in the navigation: the
        value moves to `planner_status`. mkdocs reads every page before rendering any, so the navigation
        built afterwards no longer sees it.
        """
        if page.file.src_uri in self.plan_pages:
            return self._set_meta_aside(markdown, page.file.src_uri)
        design = self.design_pages.get(page.file.src_uri)
        if design is None or self.roadmap is None or self.renderer is None:
            return markdown
        if "status" in page.meta:
            page.meta["planner_status"] = page.meta.pop("status")
        return self.renderer.design_page(self.roadmap, design, markdown, page.file.src_uri)

    def on_page_content(self, html: str, /, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        """The metadata block set aside in on_page_markdown goes back where its placeholder is, before
        the search plugin (which runs later, on_page_context) indexes the page."""
        block = self.meta_blocks.pop(page.file.src_uri, None)
        if block is None:
            return html
        return html.replace(f"<p>{self.meta_token}</p>", block.rstrip("\n"), 1)

    def _set_meta_aside(self, markdown: str, src_uri: str) -> str:
        """A plan page's metadata block is HTML the renderer wrote; Python-Markdown would parse every tag of
        it only to pass it through unchanged, about a quarter of the page's conversion. It waits aside
        behind a one-word paragraph and is put back into the page's HTML by on_page_content."""
        match = _META_BLOCK.search(markdown)
        if match is None:
            return markdown
        self.meta_blocks[src_uri] = match.group(0)
        return f"{markdown[: match.start()]}{self.meta_token}\n{markdown[match.end() :]}"

    def on_serve(
        self, server: LiveReloadServer, /, *, config: MkDocsConfig, builder: Any
    ) -> LiveReloadServer | None:
        if self.planner is not None:
            for path in (self.planner.plans_path, self.planner.root / EVIDENCE_PATH.parent):
                if path.is_dir():
                    server.watch(str(path))
        return server

    def _diagram_library(self, root: Path) -> Path | None:
        path = mermaid_path(root)
        if path.is_file():
            return path
        if self.config.fetch_diagrams and not self.fetch_tried:
            self.fetch_tried = True
            try:
                return fetch_mermaid(root, timeout=15.0)
            except AssetError as exc:
                log.info(f"diagrams will show as text: {exc}")
        return None


def _ensure_markdown(config: MkDocsConfig) -> None:
    """Turn on what the pages need, and route every mermaid fence to the local library, never a CDN."""
    for name in (*REQUIRED_EXTENSIONS, "pymdownx.superfences"):
        if name not in config.markdown_extensions:
            config.markdown_extensions.append(name)
    superfences = config.mdx_configs.setdefault("pymdownx.superfences", {})
    fences = [f for f in superfences.get("custom_fences", []) if f.get("name") != "mermaid"]
    superfences["custom_fences"] = [*fences, dict(MERMAID_FENCE)]


def _replace(files: Files, file: File) -> None:
    existing = files.get_file_from_path(file.src_uri)
    if existing is not None:
        files.remove(existing)
    files.append(file)


def automatic_nav(files: Files) -> list[Any]:
    """mkdocs' automatic navigation as folder entries: top-level pages (index first), then each folder."""
    pages = sorted(f.src_uri for f in files.documentation_pages())
    top = sorted((p for p in pages if "/" not in p), key=lambda p: (p != "index.md", p))
    folders = sorted({p.split("/")[0] for p in pages if "/" in p})
    return [*top, *({_folder_title(name): f"{name}/"} for name in folders)]


def _folder_title(name: str) -> str:
    return name.replace("-", " ").replace("_", " ").capitalize()


def expand_nav(
    nav: list[Any],
    files: Files,
    roadmap_dir: str,
    show_plans: bool,
    overview: tuple[tuple[str, str], ...] = OVERVIEW_PAGES,
) -> list[Any]:
    """Replace entries naming a folder (`tutorial/`) with that folder's pages; drop empty folders.

    A folder's index.md comes first; then the pages in the order its index links to them (so the index
    page is also the table of contents), then the rest by file name.
    """
    by_uri = {f.src_uri: f for f in files.documentation_pages()}
    pages = sorted(by_uri)
    titles = {f"{roadmap_dir}/{name}": title for name, title in overview}

    def link_order(prefix: str) -> dict[str, int]:
        if prefix == f"{roadmap_dir}/":
            return {f"{prefix}{name}": i for i, (name, _) in enumerate(overview)}
        index = by_uri.get(f"{prefix}index.md")
        if index is None:
            return {}
        try:
            text = index.content_string
        except (OSError, UnicodeDecodeError):
            return {}
        order: dict[str, int] = {}
        for target in _INDEX_LINK.findall(text):
            order.setdefault(prefix + target, len(order))
        return order

    def folder(prefix: str) -> list[Any]:
        direct = [p for p in pages if p.startswith(prefix) and "/" not in p[len(prefix) :]]
        order = link_order(prefix)
        direct.sort(key=lambda p: (not p.endswith("/index.md"), order.get(p, len(order)), p))
        entries: list[Any] = [{titles[p]: p} if p in titles else p for p in direct]
        nested = [p[len(prefix) :] for p in pages if p.startswith(prefix) and "/" in p[len(prefix) :]]
        subfolders = sorted({rest.split("/")[0] for rest in nested})
        for name in subfolders:
            sub = f"{prefix}{name}/"
            if any(p.startswith(sub) for p in pages) and (show_plans or sub != f"{roadmap_dir}/plans/"):
                entries.append({_folder_title(name): folder(sub)})
        return entries

    def walk(items: list[Any]) -> list[Any]:
        out: list[Any] = []
        for item in items:
            if isinstance(item, str) and item.endswith("/"):
                out.extend(folder(item))
            elif isinstance(item, dict):
                (title, value), *_ = item.items()
                if isinstance(value, str) and value.endswith("/"):
                    value = folder(value)
                    if not value:
                        continue
                elif isinstance(value, list):
                    value = walk(value)
                out.append({title: value})
            else:
                out.append(item)
        return out

    return walk(nav)
