"""Fixtures for the site tests: one strict build of this repository's site, served on loopback."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from site_fixtures import REPO, mkdocs_build


@pytest.fixture(scope="session")
def repo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This repository's site, built once with `--strict`."""
    site = tmp_path_factory.mktemp("repo-site") / "site"
    result = mkdocs_build(REPO, site, "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    return site


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def served_site(repo_site: Path) -> Iterator[str]:
    """The built site on a free loopback port; stopped after the session."""
    handler = functools.partial(_QuietHandler, directory=str(repo_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
