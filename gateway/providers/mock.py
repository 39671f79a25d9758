"""The ``mock`` provider: a deterministic in-process OpenAI-compatible model.

Used by the embedded default config, the tests, the demos and (through ``gateway mock-upstream``) the
benchmarks. It echoes the last message (or answers a fixed ``reply``), counts tokens with a fixed rule
(one token per 4 characters, rounded up, plus 3 per message), honours ``max_tokens`` (finish_reason
``length``), ``n``, ``stop``, ``logprobs``/``top_logprobs`` and ``response_format`` (JSON that validates
against a ``json_schema``), answers a tool call whose arguments validate against the function's
``parameters`` when the request forces one (``tool_choice: required`` or a named function), streams
in ``chunk_size``-character chunks, embeds text as deterministic unit vectors, and can inject latency
and failures (``fail_rate`` of requests answer ``fail_status``). A ``barrier`` holds answers until that many
requests wait at once, so tests make requests overlap for certain instead of by timing.

The body builders are pure functions so ``gateway/mock_upstream.py`` serves exactly the same answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from gateway.config import ProviderConfig, RouteConfig
from gateway.errors import GatewayError, upstream_error
from gateway.params import PASS_THROUGH
from gateway.pipeline import Call, Response, Result, Stream
from gateway.providers.base import ConfigProblems, now, options_problems
from gateway.providers.mock_schema import instance


class MockOptions(BaseModel):
    """``options:`` of a mock provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reply: str | None = None  # fixed answer; None echoes the last message
    latency_ms: float = Field(default=0.0, ge=0)  # before the answer (time to first token)
    chunk_delay_ms: float = Field(default=0.0, ge=0)  # between stream chunks
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    fail_status: int = Field(default=503, ge=400, le=599)
    chunk_size: int = Field(default=16, ge=1)  # characters per stream chunk
    embedding_dims: int = Field(default=16, ge=1, le=4096)
    seed: int = 0  # seeds the failure draws, so a run is reproducible
    # Streams break off with an upstream error after this many chunks (failover tests).
    break_after_chunks: int | None = Field(default=None, ge=1)
    # Answers wait until this many requests are waiting at once, then all go on together (and the barrier
    # fills again). Tests use it to keep requests in flight for certain: a budget or concurrency check that
    # forgets requests in flight then admits all of them, where a latency would only make that likely.
    barrier: int | None = Field(default=None, ge=2)


def count_tokens(text: str) -> int:
    """The mock's token count for ``text``: one per 4 characters, rounded up."""
    return (len(text) + 3) // 4


def content_text(content: Any) -> str:
    """The text of a message ``content`` (a string or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def prompt_tokens(messages: Any) -> int:
    """The mock's prompt token count for a ``messages`` list."""
    if not isinstance(messages, list):
        return 0
    return sum(3 + count_tokens(content_text(m.get("content"))) for m in messages if isinstance(m, dict))


def _max_tokens(body: dict[str, Any]) -> int | None:
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return limit if isinstance(limit, int) and limit > 0 else None


def _tools(body: dict[str, Any]) -> dict[str, Any]:
    """The request's functions by name (their ``function`` objects)."""
    tools = body.get("tools")
    functions = [t.get("function") for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
    return {f["name"]: f for f in functions if isinstance(f, dict) and isinstance(f.get("name"), str)}


def _forced_tool(body: dict[str, Any]) -> str | None:
    """The function name the request forces a call to, if any."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return name if isinstance(name, str) else None
    if choice == "required":
        first = tools[0].get("function", {}) if isinstance(tools[0], dict) else {}
        name = first.get("name")
        return name if isinstance(name, str) else None
    return None


def _structured(body: dict[str, Any], text: str) -> str | None:
    """The JSON text ``response_format`` asks for, or None for plain text.

    ``json_schema`` answers the schema's minimal instance (so SDK ``.parse()`` and LangChain's
    ``with_structured_output`` work with no key); ``json_object`` wraps the echo in an object.
    """
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return json.dumps(instance(schema if isinstance(schema, dict) else {}))
    if kind == "json_object":
        return json.dumps({"reply": text})
    return None


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    return [s for s in stops if isinstance(s, str) and s]


def _answer(body: dict[str, Any], options: MockOptions) -> tuple[str, str]:
    """(reply text, finish_reason): the echo or fixed reply, shaped by ``response_format``, cut at the
    first ``stop`` string (which is not included, as with OpenAI) and at ``max_tokens``."""
    if options.reply is not None:
        text = options.reply
    else:
        messages = body.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else {}
        text = content_text(last.get("content")) if isinstance(last, dict) else ""
    text = _structured(body, text) or text
    cuts = [text.find(s) for s in _stops(body) if s in text]
    if cuts:
        text = text[: min(cuts)]
    limit = _max_tokens(body)
    if limit is not None and count_tokens(text) > limit:
        return text[: limit * 4], "length"
    return text, "stop"


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _tokens(text: str) -> list[str]:
    """The mock's tokens of ``text``: 4-character pieces, matching :func:`count_tokens`."""
    return [text[i : i + 4] for i in range(0, len(text), 4)]


def _logprob(token: str, rank: int) -> float:
    """A deterministic log probability: the chosen token most likely, alternatives less so."""
    digest = hashlib.sha256(token.encode()).digest()
    return -round(digest[0] / 2550 + rank * 1.5, 4)


def _logprobs(body: dict[str, Any], text: str) -> dict[str, Any] | None:
    """``logprobs.content`` for ``text`` when the request asks for it (``top_logprobs`` alternatives each)."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    top = top if isinstance(top, int) and not isinstance(top, bool) and top > 0 else 0

    def entry(token: str, rank: int) -> dict[str, Any]:
        return {"token": token, "logprob": _logprob(token, rank), "bytes": list(token.encode())}

    def alternatives(token: str) -> list[dict[str, Any]]:
        return [entry(token if rank == 0 else f"{token}#{rank}", rank) for rank in range(top)]

    content = [{**entry(t, 0), "top_logprobs": alternatives(t)} for t in _tokens(text)]
    return {"content": content, "refusal": None}


def _tool_call(name: str, body: dict[str, Any], seed: str) -> dict[str, Any]:
    """A call of ``name`` whose ``arguments`` validate against the function's ``parameters``."""
    call_id = "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]
    parameters = _tools(body).get(name, {}).get("parameters")
    arguments = json.dumps(instance(parameters if isinstance(parameters, dict) else {"type": "object"}))
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _call_seed(response_id: str, index: int) -> str:
    # Choice 0 keeps the id the mock always gave; further choices need ids of their own.
    return response_id if index == 0 else f"{response_id}:{index}"


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_body(body: dict[str, Any], model: str, options: MockOptions, response_id: str) -> dict[str, Any]:
    """The mock's complete ``chat.completion`` answer to ``body``: ``n`` equal choices."""
    tool = _forced_tool(body)
    choices = []
    completion = 0
    for index in range(_choices(body)):
        logprobs = None
        if tool is not None:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [_tool_call(tool, body, _call_seed(response_id, index))],
            }
            finish = "tool_calls"
            completion += count_tokens(tool) + 2
        else:
            text, finish = _answer(body, options)
            message = {"role": "assistant", "content": text, "refusal": None}
            logprobs = _logprobs(body, text)
            completion += count_tokens(text)
        choices.append({"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish})
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": choices,
        "usage": _usage(prompt_tokens(body.get("messages")), completion),
        "system_fingerprint": "gateway-mock",
    }


def chat_chunks(
    body: dict[str, Any], model: str, options: MockOptions, response_id: str
) -> list[dict[str, Any]]:
    """The mock's streamed answer: per choice a role chunk, content chunks and a finish chunk (choice
    after choice, each chunk naming its ``index``), then a usage chunk. With ``logprobs`` each content
    chunk carries the logprobs of its own text."""
    created = now()

    def chunk(
        index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
    ) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "gateway-mock",
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }

    tool = _forced_tool(body)
    chunks = []
    completion = 0
    for index in range(_choices(body)):
        if tool is not None:
            call = _tool_call(tool, body, _call_seed(response_id, index))
            chunks += [
                chunk(
                    index,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"index": 0, **call, "function": {"name": tool, "arguments": ""}}],
                    },
                ),
                chunk(
                    index,
                    {"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]},
                ),
                chunk(index, {}, "tool_calls"),
            ]
            completion += count_tokens(tool) + 2
        else:
            text, finish = _answer(body, options)
            size = options.chunk_size
            chunks.append(chunk(index, {"role": "assistant", "content": ""}))
            chunks += [
                chunk(index, {"content": piece}, logprobs=_logprobs(body, piece))
                for piece in (text[i : i + size] for i in range(0, len(text), size))
            ]
            chunks.append(chunk(index, {}, finish))
            completion += count_tokens(text)
    chunks.append(
        {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "gateway-mock",
            "choices": [],
            "usage": _usage(prompt_tokens(body.get("messages")), completion),
        }
    )
    return chunks


def embed(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text``: equal texts embed equally."""
    raw = b""
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [v / 2**32 - 0.5 for v in struct.unpack(f"<{dims}I", raw[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


MAX_EMBEDDING_DIMS = 4096
"""The longest vector the mock makes (``options.embedding_dims`` has the same bound)."""


def embeddings_body(body: dict[str, Any], model: str, options: MockOptions) -> dict[str, Any]:
    """The mock's ``embeddings`` answer: one vector per input."""
    raw = body.get("input")
    inputs: list[Any] = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    requested = body.get("dimensions")
    if requested is not None and not (isinstance(requested, int) and 0 < requested <= MAX_EMBEDDING_DIMS):
        # Never a silent fallback: a client that asked for a length must get it or be told.
        message = f"'dimensions' must be an integer from 1 to {MAX_EMBEDDING_DIMS} for the mock."
        raise GatewayError(400, message, "invalid_request_error", param="dimensions")
    dims = requested or options.embedding_dims
    texts = [item if isinstance(item, str) else json.dumps(item) for item in inputs]
    tokens = sum(count_tokens(t) for t in texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": embed(t, dims)} for i, t in enumerate(texts)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def failure(status: int) -> GatewayError:
    """The error an injected failure answers."""
    if status == 429:
        return GatewayError(
            429,
            "Mock provider rate limit (injected failure).",
            "rate_limit_error",
            "rate_limit_exceeded",
            headers={"retry-after": "1"},
        )
    if status >= 500:
        return GatewayError(status, "Mock provider failure (injected).", "upstream_error", "upstream_error")
    return GatewayError(
        status, "Mock provider rejected the request (injected).", "invalid_request_error", "mock_error"
    )


class MockProvider:
    """The in-process mock model (``type: mock``)."""

    # The mock honours n, stop, logprobs, response_format and tools itself; sampling parameters (seed,
    # penalties, temperature) have nothing to change in a deterministic echo, so every parameter is accepted.
    params = PASS_THROUGH

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = config.name
        self.options = MockOptions.model_validate(config.options)
        self._random = random.Random(self.options.seed)
        # asyncio.Barrier: cyclic, and a waiter that is cancelled (its client left) leaves the count.
        self._barrier = asyncio.Barrier(self.options.barrier) if self.options.barrier else None

    @classmethod
    def config_problems(cls, config: ProviderConfig) -> ConfigProblems:
        """Validate ``options`` against :class:`MockOptions`."""
        return options_problems(MockOptions, config.options)

    async def _before(self) -> None:
        if self._barrier is not None:
            await self._barrier.wait()
        if self.options.latency_ms:
            await asyncio.sleep(self.options.latency_ms / 1000.0)
        if self.options.fail_rate and self._random.random() < self.options.fail_rate:
            raise failure(self.options.fail_status)

    async def chat(self, call: Call, route: RouteConfig) -> Result:
        """Answer from the mock, after the configured latency; may fail on purpose."""
        await self._before()
        model = route.model or call.model
        response_id = "chatcmpl-" + call.request_id
        if not call.stream:
            return Response(chat_body(call.body, model, self.options, response_id))
        return Stream(self._stream(chat_chunks(call.body, model, self.options, response_id)))

    async def _stream(self, chunks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        delay = self.options.chunk_delay_ms / 1000.0
        for i, chunk in enumerate(chunks):
            if delay and i:
                await asyncio.sleep(delay)
            if i == self.options.break_after_chunks:
                raise upstream_error(502, "Mock provider broke off the stream (injected).", "upstream_stream")
            yield chunk

    async def embeddings(self, call: Call, route: RouteConfig) -> Response:
        """Deterministic embeddings, after the configured latency; may fail on purpose."""
        await self._before()
        return Response(embeddings_body(call.body, route.model or call.model, self.options))
