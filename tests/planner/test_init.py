"""`planner init`: the starter files, never overwriting, and the plugin added to an existing mkdocs.yml."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from planner.cli import main
from planner.config import load_config
from planner.render.assets import mermaid_path
from planner.starter import StarterError, add_plugin, init_project

STARTER_FILES = ["planner.toml", "plans/README.md", "plans/_template.md", "docs/index.md", "mkdocs.yml"]

EXISTING_MKDOCS = """\
# Our docs: do not lose this comment.
site_name: Team docs
repo_url: !ENV [REPO_URL, "https://example.com/team"]

plugins:
  - search:
      lang: en   # keep me
  - tags
  # trailing comment inside the block

markdown_extensions:
  - pymdownx.superfences:
      custom_fences:
        - name: mermaid
          class: mermaid
          format: !!python/name:pymdownx.superfences.fence_code_format
nav:
  - Home: index.md
"""


def test_init_creates_every_starter_file_in_an_empty_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["init", str(tmp_path / "team")])
    assert result.exit_code == 0, result.output
    root = tmp_path / "team"
    for name in STARTER_FILES:
        assert (root / name).is_file(), name
        assert f"created  {name}" in result.output
    config = load_config(root)  # planner.toml reads back as the defaults
    assert config.lifecycle == ("Proposed", "Planned", "In Progress", "Completed")
    assert config.units == {"day": 1.0, "week": 5.0, "month": 20.0} and config.lanes == 2
    mkdocs = yaml.safe_load((root / "mkdocs.yml").read_text())
    assert mkdocs["plugins"] == ["search", "planner"] and mkdocs["theme"]["name"] == "material"
    home = (root / "docs" / "index.md").read_text()
    assert "(roadmap/board.md)" in home and "(roadmap/timeline.md)" in home
    readme = (root / "plans" / "README.md").read_text()
    assert (
        "`HIGH`, `MEDIUM`, `LOW`" in readme and "Proposed ──► Planned ──► In Progress ──► Completed" in readme
    )
    assert "# Response Caching\n\n## Goal\n## User Benefit\n## Design Proposal\n" in readme
    template = (root / "plans" / "_template.md").read_text()
    assert "{{ title | yaml }}" in template  # the built-in template itself, for the team to edit


def test_init_keeps_existing_files_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "README.md").write_text("our own conventions\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Our home\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.planner]\nlanes = 3\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    assert "kept     plans/README.md (already there)" in result.output
    assert "kept     docs/index.md (already there)" in result.output
    assert "kept     pyproject.toml (the planner config is already there)" in result.output
    assert (tmp_path / "plans" / "README.md").read_text() == "our own conventions\n"
    assert (tmp_path / "docs" / "index.md").read_text() == "# Our home\n"
    assert not (tmp_path / "planner.toml").exists()
    again = CliRunner().invoke(main, ["init"])  # a second run changes nothing
    assert again.exit_code == 0 and "created" not in again.output and "updated" not in again.output
    assert "kept     mkdocs.yml (the planner plugin is already enabled)" in again.output


def test_init_adds_the_plugin_to_an_existing_mkdocs_yml_byte_for_byte(tmp_path: Path) -> None:
    (tmp_path / "mkdocs.yml").write_text(EXISTING_MKDOCS)
    written = {w.path.name: w.outcome for w in init_project(tmp_path)}
    assert written["mkdocs.yml"] == "updated"
    text = (tmp_path / "mkdocs.yml").read_text()
    assert text == EXISTING_MKDOCS.replace("  - tags\n", "  - tags\n  - planner\n")
    assert (tmp_path / "docs" / "index.md").is_file()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (
            "site_name: x\nplugins: [search, tags]  # two\n",
            "site_name: x\nplugins: [search, tags, planner]  # two\n",
        ),
        ("site_name: x\nplugins: []\n", "site_name: x\nplugins: [planner]\n"),
        ("site_name: x\n", "site_name: x\n\nplugins:\n  - search\n  - planner\n"),
        ("site_name: x", "site_name: x\n\nplugins:\n  - search\n  - planner\n"),
        (
            "plugins:\n    search: {}\nsite_name: x\n",
            "plugins:\n    search: {}\n    planner: {}\nsite_name: x\n",
        ),
        ("site_name: x\r\nplugins:\r\n- search\r\n", "site_name: x\r\nplugins:\r\n- search\r\n- planner\r\n"),
    ],
)
def test_the_plugin_is_added_whatever_the_list_style(tmp_path: Path, before: str, after: str) -> None:
    path = tmp_path / "mkdocs.yml"
    path.write_bytes(before.encode())
    add_plugin(path)
    assert path.read_bytes().decode() == after
    assert yaml.safe_load(after)["plugins"] in (
        ["search", "tags", "planner"],
        ["planner"],
        ["search", "planner"],
        {"search": {}, "planner": {}},
    )


def test_a_plugins_list_that_cannot_be_edited_safely_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "mkdocs.yml"
    text = "site_name: x\nplugins: !ENV [PLUGINS]\n"
    path.write_text(text)
    with pytest.raises(StarterError, match="add `- planner` to that list by hand"):
        add_plugin(path)
    assert path.read_text() == text
    path.write_text("site_name: [x\n")
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 1 and "mkdocs.yml: not valid YAML" in result.output
    assert "Traceback" not in result.output


def test_init_new_validate_build_serve_in_an_empty_git_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The "done when": init, new, validate, build and serve all work in an empty git repository.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(main, ["init"]).exit_code == 0
    assert runner.invoke(main, ["new", "HIGH-x"]).exit_code == 0
    validated = runner.invoke(main, ["validate"])
    assert validated.exit_code == 0, validated.output  # a Proposed scaffold is a draft: warnings only
    assert "0 error(s), 6 warning(s)" in validated.output
    strict = runner.invoke(main, ["validate", "--strict"])
    assert strict.exit_code == 1
    for section in ("Goal", "User Benefit", "Design Proposal", "Implementation Steps", "Open Questions"):
        assert f"warning PL043 section {section!r}" in strict.output
    stand_in_diagrams(tmp_path)
    built = runner.invoke(main, ["build"])
    assert built.exit_code == 0, built.output
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "This site is the roadmap, generated by" in home  # docs/index.md, not a directory listing
    assert 'href="roadmap/board/"' in home
    assert (tmp_path / "site" / "roadmap" / "plans" / "x" / "index.html").is_file()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", "from planner.cli import main; main()", "serve", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        served = wait_for(f"http://127.0.0.1:{port}/", lambda text: "This site is the roadmap" in text)
        assert 'href="roadmap/board/"' in served
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for(url: str, ready: Callable[[str], bool], attempts: int = 180) -> str:
    """Poll `url` (every half second) until it answers 200 with a body for which `ready` holds."""
    last = ""
    for _ in range(attempts):
        try:
            response = httpx.get(url, timeout=5)
            last = str(response.status_code)
            if response.status_code == 200 and ready(response.text):
                return response.text
        except httpx.TransportError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready: {last}")


def stand_in_diagrams(root: Path) -> None:
    """A stand-in for the pinned diagram library, so `planner build` fetches nothing (loopback only)."""
    path = mermaid_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("/* stand-in */", encoding="utf-8")


def test_init_follows_an_existing_mkdocs_yml_docs_dir_and_roadmap_dir(tmp_path: Path) -> None:
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: Team\ndocs_dir: handbook\nplugins:\n  - planner:\n      roadmap_dir: plan\n"
        "nav:\n  - Home: index.md\n  - Roadmap: plan/\n"
    )
    written = {w.path.relative_to(tmp_path).as_posix(): w for w in init_project(tmp_path)}
    assert written["mkdocs.yml"].outcome == "kept"
    home = (tmp_path / "handbook" / "index.md").read_text()
    assert home.startswith("# Team\n") and "(plan/board.md)" in home
    assert not (tmp_path / "docs").exists()


def test_init_says_when_an_existing_nav_leaves_the_roadmap_out(tmp_path: Path) -> None:
    (tmp_path / "mkdocs.yml").write_text("site_name: Team\nnav:\n  - Home: index.md\n  - Guide: guide/\n")
    result = CliRunner().invoke(main, ["init", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "updated  mkdocs.yml (added the planner plugin; its nav lists no roadmap/: add" in result.output
