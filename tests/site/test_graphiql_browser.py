"""The GraphiQL page in headless Chromium: it loads every asset from the gateway (none off-site) under its
Content-Security-Policy, and a query typed with a key in the Headers tab runs and shows its result, with no
console error. Locally the test skips without chromium; in CI it fails.
"""

from __future__ import annotations

import json
from pathlib import Path

from cdp import chromium_page, find_chromium
from test_browser import unavailable
from uvicorn_server import run_server

from gateway.app import create_app
from gateway.config import parse_config

CHROMIUM = find_chromium()
MASTER = "sk-graphiql-browser-master"
ALICE = "sk-graphiql-browser-alice"
CONFIG = f"""
auth:
  master_key: {MASTER}
  keys: [{{name: alice, key: {ALICE}, models: [echo]}}]
providers: [{{name: mock, type: mock}}]
models:
  - {{name: echo, routes: [{{provider: mock}}]}}
  - {{name: hidden, routes: [{{provider: mock}}]}}
usage: {{database: ":memory:"}}
features: {{graphql: {{enabled: true, graphiql: true, introspection: true}}}}
"""

# GraphiQL 3's editors are CodeMirror 5 instances; each wrapper element holds its editor as `.CodeMirror`.
EDITOR = "document.querySelector({section} + ' .CodeMirror').CodeMirror"
QUERY = EDITOR.format(section=json.dumps(".graphiql-query-editor"))
RESPONSE = EDITOR.format(section=json.dumps(".graphiql-response"))
HEADERS = "document.querySelectorAll('.graphiql-editor-tool .CodeMirror')[1].CodeMirror"
RUN = "document.querySelector('.graphiql-execute-button').click()"


def test_graphiql_runs_a_query_with_every_asset_from_the_gateway(tmp_path: Path) -> None:
    if CHROMIUM is None:
        unavailable("needs Debian's chromium (scripts/test installs it)")
    app = create_app(parse_config(CONFIG, "graphiql.yaml"))
    with run_server(app) as url, chromium_page(CHROMIUM) as page:
        page.goto(f"{url}/graphql")
        page.wait_until(f"!!document.querySelector('.graphiql-execute-button') && !!{QUERY}")
        # Without a key the page asks for one instead of sending a request bound to fail.
        page.evaluate(f"{QUERY}.setValue('{{ models {{ name }} }}')")
        page.evaluate(RUN)
        page.wait_until(f"{RESPONSE}.getValue().includes('Headers tab')")
        # The Headers tab, then the key in its editor (the second of the tools' editors, after Variables).
        page.evaluate(
            "Array.from(document.querySelectorAll('.graphiql-editor-tools button'))"
            ".find(b => b.textContent.trim() === 'Headers').click()"
        )
        headers = json.dumps(json.dumps({"Authorization": f"Bearer {ALICE}"}))
        page.evaluate(f"{HEADERS}.setValue({headers})")
        page.evaluate(RUN)
        answer = page.wait_until(f"{RESPONSE}.getValue().includes('echo') && {RESPONSE}.getValue()")
        assert json.loads(answer) == {"data": {"models": [{"name": "echo"}]}}  # alice's models only
        page.screenshot(tmp_path / "graphiql.png")
        requested = [
            e["params"]["request"]["url"]
            for e in page.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
        assert f"{url}/graphql/static/graphiql-3.8.3.min.js" in requested
        assert requested and all(u.startswith(url + "/") or u.startswith("data:") for u in requested), (
            requested
        )
        assert not page.errors, page.errors
