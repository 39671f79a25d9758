"""Links between generated pages.

Markdown links use `.md` paths, which mkdocs checks and rewrites. Diagram `click` targets and raw HTML are
not rewritten by mkdocs, so they need the URL the page will have: that depends on how the site is built.
"""

from __future__ import annotations

import posixpath
from enum import Enum


class LinkStyle(Enum):
    """How a page's source path becomes the address a browser follows."""

    MARKDOWN = "md"  # plain Markdown files (`planner render --out`): link to the .md file
    DIRECTORY = "dir"  # mkdocs with use_directory_urls (the default): `plans/x.md` → `plans/x/`
    HTML = "html"  # mkdocs without directory URLs: `plans/x.md` → `plans/x.html`


def page_url(src: str, style: LinkStyle) -> str:
    """The site-relative address of the page built from `src` (a docs-relative POSIX path)."""
    if style is LinkStyle.MARKDOWN or not src.endswith(".md"):
        return src
    stem = src[: -len(".md")]
    if style is LinkStyle.HTML:
        return stem + ".html"
    if stem == "index" or stem.endswith("/index"):
        return stem[: -len("index")]
    return stem + "/"


def href(from_src: str, to_src: str, style: LinkStyle) -> str:
    """A relative link from the page built from `from_src` to the one built from `to_src`."""
    here, there = page_url(from_src, style), page_url(to_src, style)
    base = here if here.endswith("/") or not here else posixpath.dirname(here)
    rel = _relpath(there, base)
    if there.endswith("/") or not there:
        rel = "./" if rel == "." else rel + "/"
    return rel


def _relpath(path: str, start: str) -> str:
    """posixpath.relpath for site-relative addresses, by string work: it is called for every link of every
    plan page, and posixpath.relpath consults the working directory each time. Anything absolute or
    climbing (`..`) goes to posixpath.relpath, which knows those cases."""
    parts = [p for p in path.split("/") if p and p != "."]
    base = [p for p in start.split("/") if p and p != "."]
    if path.startswith("/") or start.startswith("/") or ".." in parts or ".." in base:
        return posixpath.relpath(path or ".", start or ".")
    common = 0
    while common < len(base) and common < len(parts) and base[common] == parts[common]:
        common += 1
    return "/".join([".."] * (len(base) - common) + parts[common:]) or "."


def md_link(from_src: str, to_src: str) -> str:
    """A relative `.md` link for Markdown text, which mkdocs validates and rewrites.

    Both are docs-relative POSIX paths without `..`, so plain string work does (posixpath.relpath would
    consult the working directory, and is called for every link of every page).
    """
    here = from_src.split("/")[:-1]
    there = to_src.split("/")
    common = 0
    while common < len(here) and common < len(there) - 1 and here[common] == there[common]:
        common += 1
    return "/".join([".."] * (len(here) - common) + there[common:])
