"""The roadmap renderer: plans, completed designs and evidence turned into Markdown pages.

One renderer serves both the mkdocs plugin (pages generated in memory) and `planner render --out DIR`
(the same pages written as Markdown files).
"""

from planner.render.pages import Renderer, render_pages, write_pages
from planner.render.roadmap import FeatureState, Roadmap, load_roadmap

__all__ = ["FeatureState", "Renderer", "Roadmap", "load_roadmap", "render_pages", "write_pages"]
