"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

The body is checked against :data:`~gateway.request_schema.RESPONSES_PARAMS`, its conversation rebuilt
from the stored previous response when it names one (:mod:`gateway.responses_store`), translated to the
canonical chat request (:mod:`gateway.formats.responses`) and run through the same stage chain as
``/v1/chat/completions`` (keys, rate limits, budgets, cache, routing, usage). The answer becomes a
``response`` object, a stream becomes the typed event sequence (:mod:`gateway.formats.responses_stream`),
and the finished response is stored for the calling key unless the request says ``store: false``.
Errors use OpenAI's envelope, as on every OpenAI route.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.errors import GatewayError, invalid_request, state_store_unavailable
from gateway.formats.responses import (
    chat_to_response,
    history,
    listed_items,
    request_items,
    request_to_chat,
    response_shell,
)
from gateway.formats.responses_stream import ResponseEvents
from gateway.ids import IdSource
from gateway.logging import log_error
from gateway.pipeline import Call, Stream
from gateway.providers.openai_responses import ANSWER_FIELD, EVENT_FIELD, NATIVE, native_body
from gateway.redact import Redactor
from gateway.request_schema import RESPONSES_PARAMS, check_params
from gateway.responses_store import ResponseStore
from gateway.routes.openai import SSEResponse, begin, json_response, read_body, request_call
from gateway.schema import check_chat, parse_json_object
from gateway.stores import StoreUnavailable

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.front import GatewayApp
    from gateway.runtime import Runtime


def _frame(event: dict[str, Any]) -> bytes:
    # OpenAI names each event twice (the SSE event line and its "type"); some clients read only one.
    return b"event: " + event["type"].encode() + b"\ndata: " + jsonio.dumps(event) + b"\n\n"


async def _sse(
    call: Call, stream: Stream, events: ResponseEvents, redactor: Redactor
) -> AsyncIterator[bytes]:
    try:
        async for event in stream:
            yield _frame(event)
    except GatewayError as exc:
        # Headers are sent: report in-band with the next sequence number, then end the stream.
        yield _frame(events.error(redactor.body(exc)["error"]))
    except StoreUnavailable:
        yield _frame(events.error(state_store_unavailable().body()["error"]))
    except Exception as exc:
        log_error(call.request_id, exc)
        yield _frame(events.error({"message": "Internal gateway error.", "code": "server_error"}))
    finally:
        await stream.aclose()


FINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})


def _native(runtime: Runtime, model: Any) -> bool:
    """Whether every route that may serve ``model`` (its fallbacks' included) speaks the Responses API
    natively: only then is the request sent unchanged, since a failover to a chat-only route could not
    serve what translation would have refused."""
    todo, seen = [model], set()
    while todo:
        name = todo.pop()
        if not isinstance(name, str) or name in seen:
            continue
        seen.add(name)
        config = runtime.models.get(name)
        if config is None:
            return False
        if not all(
            getattr(runtime.providers.get(r.provider), "native_responses", False) for r in config.routes
        ):
            return False
        todo.extend(config.fallbacks)
    return bool(seen)


def _as_ours(response: Mapping[str, Any], shell: Mapping[str, Any]) -> dict[str, Any]:
    """An upstream's response object under this gateway's id (the one stored for the key) and with the
    client's ``previous_response_id`` (the upstream was sent the whole conversation instead)."""
    return {**response, "id": shell["id"], "previous_response_id": shell["previous_response_id"]}


def _relayed(event: Mapping[str, Any], shell: Mapping[str, Any]) -> dict[str, Any]:
    fields = {name: value for name, value in event.items() if name not in ("type", "sequence_number")}
    if isinstance(fields.get("response"), dict):
        fields["response"] = _as_ours(fields["response"], shell)
    return fields


async def _stream_events(
    chunks: AsyncIterator[dict[str, Any]],
    *,
    events: ResponseEvents,
    native: bool,
    save: Callable[[dict[str, Any]], Awaitable[None]] | None,
) -> AsyncIterator[dict[str, Any]]:
    """The Responses events of a canonical stream: a native upstream's events relayed under this gateway's
    id and numbering, chat chunks (a chat upstream, or a native answer the cache replays as chunks) through
    the :class:`ResponseEvents` state machine. The finished response is saved (when ``save`` is given)
    before its last event, so a follow-up sent on seeing that event finds it."""
    shell = events.response
    translating = False
    async for chunk in chunks:
        upstream = chunk.get(EVENT_FIELD) if native else None
        if isinstance(upstream, dict) and isinstance(upstream.get("type"), str):
            event = events.event(upstream["type"], **_relayed(upstream, shell))
            if save is not None and event["type"] in FINAL_EVENTS:
                await save(event["response"])
            yield event
            continue
        if not translating:
            translating = True
            for event in events.start():
                yield event
        for event in events.chunk(chunk):
            yield event
    if translating:
        closing = events.end()
        if save is not None:
            await save(events.response)
        for event in closing:
            yield event


def _page(items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of ``items`` as OpenAI lists them: ``order`` (``desc`` by default), ``after`` an item id,
    ``limit`` 1 to 100 (20 by default); 400 naming the query parameter that is out of range."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_request("Invalid value for 'order': must be 'asc' or 'desc'.", param="order")
    limit_text = query.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise invalid_request("Invalid value for 'limit': must be an integer from 1 to 100.", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise invalid_request(f"No input item with id '{after}' in this response.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[: int(limit_text)]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else "",
        "last_id": page[-1]["id"] if page else "",
        "has_more": len(ordered) > len(page),
    }


def _responses(gateway: Gateway, runtime: Runtime) -> ResponseStore:
    return ResponseStore(gateway.store, runtime.config.features.responses.store_ttl_s)


def add_routes(app: GatewayApp, gateway: Gateway) -> None:
    """Register the Responses API endpoints serving ``gateway``."""
    # Response ids are the gateway's own, never the request id: a client may choose that one (x-request-id),
    # and a stored response must not be replaced by a later request reusing it.
    ids = IdSource()

    async def create(request: Request) -> Response:
        runtime, key = await begin(gateway, request)
        raw = parse_json_object(await read_body(request, runtime.max_body_bytes))
        check_params(raw, RESPONSES_PARAMS)
        stored = _responses(gateway, runtime)
        items = request_items(raw)
        previous = raw.get("previous_response_id")
        if previous is not None:
            before = await stored.load(key.key_id, previous, param="previous_response_id")
            items = [*history(before.input, before.response), *items]
        native = _native(runtime, raw.get("model"))
        body = native_body(raw, items) if native else request_to_chat(raw, items)
        model, stream, _ = check_chat(body)
        call = request_call(request, runtime, key, "chat", model, body, stream=stream, include_usage=True)
        call.scratch[NATIVE] = native
        shell = response_shell(raw, f"resp_{ids.hex32()}", int(time.time()))
        keep = raw.get("store") is not False
        result = await runtime.handle(call)
        if isinstance(result, Stream):
            events = ResponseEvents(shell)

            async def save(response: dict[str, Any]) -> None:
                await stored.save(key.key_id, response, items)

            # Piped, not wrapped: the stream's own layers still see the canonical chunks (usage, cache)
            # and closing it still cancels the upstream.
            result.pipe(partial(_stream_events, events=events, native=native, save=save if keep else None))
            headers = {**call.response_headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
            return SSEResponse(_sse(call, result, events, gateway.redactor), headers)
        if result.status != 200:
            return json_response(result.body, result.status, call.response_headers)
        upstream_answer = result.body.get(ANSWER_FIELD)
        if native and isinstance(upstream_answer, dict):
            answer = _as_ours(upstream_answer, shell)
        else:
            answer = chat_to_response(result.body, shell)
        if keep:
            await stored.save(key.key_id, answer, items)
        return json_response(answer, 200, call.response_headers)

    async def retrieve(request: Request) -> Response:
        runtime, key = await begin(gateway, request)
        entry = await _responses(gateway, runtime).load(key.key_id, request.path_params["response_id"])
        return json_response(entry.response)

    async def delete(request: Request) -> Response:
        runtime, key = await begin(gateway, request)
        response_id = request.path_params["response_id"]
        await _responses(gateway, runtime).delete(key.key_id, response_id)
        return json_response({"id": response_id, "object": "response", "deleted": True})

    async def input_items(request: Request) -> Response:
        runtime, key = await begin(gateway, request)
        response_id = request.path_params["response_id"]
        entry = await _responses(gateway, runtime).load(key.key_id, response_id)
        return json_response(_page(listed_items(entry.input, response_id), request.query_params))

    app.add_hot_route("/v1/responses", create)
    app.add_route(
        "/v1/responses/{response_id}/input_items", input_items, methods=["GET"], include_in_schema=False
    )
    app.add_route("/v1/responses/{response_id}", retrieve, methods=["GET"], include_in_schema=False)
    app.add_route("/v1/responses/{response_id}", delete, methods=["DELETE"], include_in_schema=False)
