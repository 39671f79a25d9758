"""Requests kept in flight for certain, for the limits that count requests in flight (budgets, concurrency).

The acceptance gateway's `*-gate` mock upstreams have a `barrier` (tests/acceptance/gateway.yaml): they answer
nobody until that many requests wait in them at once. `overlapping` sends exactly that many requests with the
key under test and replaces every refused one with a filler request of the unlimited acceptance key. So the
barrier fills whatever the gateway admits, and it fills only once every request under test was admitted or
refused: each admission decision is made while all earlier admitted requests are still in flight. A limit that
forgets requests in flight then admits all of them, every time, instead of only when the timing is unlucky.
A barrier counts the requests of one gateway process: run a live gateway under test with one worker.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any

import httpx

URL = "/v1/chat/completions"
# Only a broken gateway waits this long: every request is answered as soon as the barrier fills.
WAIT_SECONDS = 60.0


def overlapping(gateway: Any, body: dict[str, Any], key: str, count: int) -> list[httpx.Response]:
    """Send `count` requests of `body` with `key` at once to a model behind a barrier of `count`.

    Returns their replies (the fillers must all succeed). `gateway` is the acceptance `gateway` fixture.
    """

    def send(with_key: str) -> httpx.Response:
        return gateway.client.post(URL, json=body, headers=gateway.headers(with_key))

    with ThreadPoolExecutor(max_workers=2 * count) as pool:
        sent = [pool.submit(send, key) for _ in range(count)]
        fillers: list[Future[httpx.Response]] = []
        for done in as_completed(sent, timeout=WAIT_SECONDS):
            if done.result().status_code != 200:  # answered before the barrier filled: it never reached it
                fillers.append(pool.submit(send, gateway.key))
        for filler in as_completed(fillers, timeout=WAIT_SECONDS):
            assert filler.result().status_code == 200, filler.result().text
    return [future.result() for future in sent]
