"""The admin console in headless Chromium: log in, create a key, use it, see it in the log, revoke it.

The gateway is a real ``gateway run`` process with the console on (tests/gateway_process.py); the browser
is Debian's chromium driven over the DevTools protocol (tests/site/cdp.py). A screenshot of every page is
kept in the test's tmp dir (light, dark and 400 px wide). Locally the test skips without chromium; in CI it
fails.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import openai
import pytest
from cdp import Page, chromium_page, find_chromium
from gateway_process import gateway_process
from test_browser import unavailable

CHROMIUM = find_chromium()
MASTER = "sk-browser-master-0001"
ALICE = "sk-browser-alice-0002"

CONFIG = f"""
auth:
  master_key: {MASTER}
  keys: [{{name: alice, key: {ALICE}, budget: {{limit_usd: 10, period: total}}}}]
providers: [{{name: mock, type: mock}}]
models:
  - {{name: echo, routes: [{{provider: mock}}], pricing: {{input_per_1m: 100.0, output_per_1m: 200.0}}}}
usage: {{database: ":memory:"}}
features: {{console: {{enabled: true}}}}
"""

# Every visible field has a label and every control is reachable with the keyboard.
ACCESSIBLE = """(() => {
  const fields = Array.from(document.querySelectorAll('input:not([type=hidden]), select'));
  const controls = Array.from(document.querySelectorAll('a[href], button, input:not([type=hidden]), select'));
  return fields.every(f => f.labels && f.labels.length > 0) && controls.every(c => c.tabIndex >= 0);
})()"""

SUBMIT = "document.getElementById('%s').submit()"


def row_of(kind: str, value: str, inside: str = "") -> str:
    """A JavaScript string: the selector of the table row with ``data-<kind>-id`` ``value``."""
    return json.dumps(f'tr[data-{kind}-id="{value}"]{inside}')


def follow(page: Page, expression: str) -> None:
    """Run ``expression`` (a form submission) and wait for the page it leads to."""
    start = len(page.events)
    page.evaluate(expression)
    if not any(e.get("method") == "Page.loadEventFired" for e in page.events[start:]):
        page.wait_for_event("Page.loadEventFired")


def shoot(page: Page, directory: Path, name: str) -> None:
    """Light at desktop width, then dark and 400 px wide (where nothing may overflow the page)."""
    page.screenshot(directory / f"console-{name}.png")
    page.send("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    page.screenshot(directory / f"console-{name}-dark-400px.png", width=400)
    assert page.evaluate("document.documentElement.scrollWidth") <= 400, f"{name} overflows 400 px"
    page.send("Emulation.setEmulatedMedia", {"features": []})
    assert page.evaluate(ACCESSIBLE), f"{name}: a field without a label or a control out of tab order"


def test_an_operator_manages_a_key_in_the_console(tmp_path: Path) -> None:
    if CHROMIUM is None:
        unavailable("needs Debian's chromium (scripts/test installs it)")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    output: list[str] = []
    with (
        ExitStack() as stack,
        gateway_process(tmp_path, CONFIG, output) as (url, _),
        chromium_page(CHROMIUM) as page,
    ):
        # Traffic before the login, so the overview and spend pages have something to draw.
        with openai.OpenAI(api_key=ALICE, base_url=f"{url}/v1", max_retries=0) as seed:
            for i in range(5):
                seed.chat.completions.create(
                    model="echo", messages=[{"role": "user", "content": f"burst {i}"}]
                )

        page.goto(f"{url}/console/login")
        shoot(page, shots, "login")
        follow(page, f"document.getElementById('key').value = {MASTER!r}; {SUBMIT % 'login'}")
        assert page.evaluate("location.pathname") == "/console"
        assert page.evaluate("document.cookie") == ""  # HttpOnly: the session is not readable by scripts
        assert "Last hour\t5\t0\t" in page.evaluate("document.querySelector('main').innerText")  # the burst
        # The burst is charted (in the current minute's bar, or two if it straddled a minute), in every chart,
        # and the chart's table of numbers adds up to it.
        for chart, series in (("requests", "s-requests"), ("latency", "s-p99"), ("tokens", "s-tokens"),
                              ("cost", "s-cost")):  # fmt: skip
            heights = page.evaluate(
                f"Array.from(document.querySelectorAll('#chart-{chart} svg rect.{series}'))"
                ".map(r => r.getBoundingClientRect().height)"
            )
            assert len(heights) == 60 and 1 <= sum(h > 0 for h in heights) <= 2, (chart, heights)
        counts = page.evaluate(
            "Array.from(document.querySelectorAll('#chart-requests tbody tr td:first-of-type'))"
            ".map(td => Number(td.textContent))"
        )
        assert sum(counts) == 5, counts
        shoot(page, shots, "overview")

        page.goto(f"{url}/console/keys")
        fill = "document.getElementById('name').value = 'browser';"
        fill += "document.getElementById('models').value = 'echo';"
        follow(page, fill + SUBMIT % "create")
        secret = page.evaluate("document.getElementById('secret').value")
        key_id = page.evaluate("document.getElementById('secret').dataset.keyId")
        assert secret.startswith("sk-") and key_id
        shoot(page, shots, "keys-created")

        client = openai.OpenAI(api_key=secret, base_url=f"{url}/v1", max_retries=0)
        stack.callback(client.close)
        raw = client.chat.completions.with_raw_response.create(
            model="echo", messages=[{"role": "user", "content": "hello from the console's key"}]
        )
        request_id = raw.headers["x-request-id"]
        assert "hello from the console's key" in (raw.parse().choices[0].message.content or "")

        page.goto(f"{url}/console/requests")
        row = page.evaluate(f"document.querySelector({row_of('request', request_id)}).innerText")
        assert "browser" in row and "echo" in row and "200" in row, row
        # Live: with the log open, a new request's row appears without a reload (the page's script and
        # the gateway's event stream).
        page.evaluate("window.notReloaded = true")
        live = client.chat.completions.with_raw_response.create(
            model="echo", messages=[{"role": "user", "content": "seen live"}]
        )
        live_id = live.headers["x-request-id"]
        page.wait_until(f"document.querySelector({row_of('request', live_id)}) !== null")
        assert page.evaluate("window.notReloaded === true")
        shoot(page, shots, "requests")

        page.goto(f"{url}/console")  # the burst and the new key's requests, with their cost
        assert "Last hour\t7\t0\t" in page.evaluate("document.querySelector('main').innerText")

        page.goto(f"{url}/console/spend")
        spend = page.evaluate("document.querySelector('main').innerText")
        assert "key alice" in spend and "browser" in spend  # alice's budget bar, the new key's cost
        shoot(page, shots, "spend")
        page.goto(f"{url}/console/routes")
        assert "mock/" in page.evaluate("document.querySelector('main').innerText")
        shoot(page, shots, "routes")

        page.goto(f"{url}/console/keys")
        revoke = row_of("key", key_id, ' form[action$="/revoke"]')
        follow(page, f"document.querySelector({revoke}).submit()")
        status = page.evaluate(f"document.querySelector({row_of('key', key_id, ' .status')}).innerText")
        assert status == "revoked"
        shoot(page, shots, "keys-revoked")
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "again"}])

        follow(page, "document.querySelector('form.logout').submit()")
        assert page.evaluate("location.pathname") == "/console/login"

        requested = [
            e["params"]["request"]["url"]
            for e in page.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
        errors = list(page.errors)
    assert requested and all(u.startswith(url + "/") for u in requested), requested  # nothing off-site
    assert errors == []
    assert len(list(shots.glob("*.png"))) == 14
