"""What a cache entry holds, and how answers become entries and entries become answers again.

An entry is the complete response body (`chat.completion` or the embeddings list) as JSON: small entries are
stored plain behind a one-byte flag (compressing them costs more than it saves), larger ones zlib-compressed.
A streamed answer is assembled into the body it amounts to once it completed, so one entry serves both forms:
`replay_chunks` turns a body back into the `chat.completion.chunk` dicts a provider would have streamed.
"""

from __future__ import annotations

import zlib
from typing import Any

from gateway import jsonio
from gateway.pipeline import Call


def complete_body(call: Call, body: dict[str, Any]) -> bool:
    """Whether `body` is a whole, successful answer worth storing (no error, every choice finished)."""
    if "error" in body:
        return False
    if call.endpoint == "embeddings":
        return isinstance(body.get("data"), list)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(isinstance(c, dict) and c.get("finish_reason") not in (None, "error") for c in choices)


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The `chat.completion` body a complete stream of chunks amounts to; None when it is partial."""
    choices: dict[int, dict[str, Any]] = {}
    usage: dict[str, Any] | None = None
    first: dict[str, Any] | None = None
    for chunk in chunks:
        if "error" in chunk:
            return None
        first = first or chunk
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            state = choices.setdefault(
                choice.get("index", 0),
                {"role": "assistant", "content": None, "refusal": None, "tools": {}, "logprobs": None},
            )
            delta = choice.get("delta") or {}
            if isinstance(delta.get("role"), str):
                state["role"] = delta["role"]
            for field in ("content", "refusal"):
                if isinstance(delta.get(field), str):
                    state[field] = (state[field] or "") + delta[field]
            for tool in delta.get("tool_calls") or []:
                slot = state["tools"].setdefault(
                    tool.get("index", 0), {"function": {"name": "", "arguments": ""}}
                )
                for field in ("id", "type"):
                    if tool.get(field):
                        slot[field] = tool[field]
                function = tool.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
                state["logprobs"] = {
                    "content": (state["logprobs"] or {"content": []})["content"] + logprobs["content"]
                }
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]
    unfinished = any(s.get("finish_reason") in (None, "error") for s in choices.values())
    if first is None or not choices or unfinished:
        return None
    out_choices = []
    for index in sorted(choices):
        state = choices[index]
        message: dict[str, Any] = {
            "role": state["role"],
            "content": state["content"],
            "refusal": state["refusal"],
        }
        if state["tools"]:
            message["tool_calls"] = [
                {"type": "function", **state["tools"][i]} for i in sorted(state["tools"])
            ]
        out_choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": state["logprobs"],
                "finish_reason": state["finish_reason"],
            }
        )
    body = {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": out_choices,
        "usage": usage,
    }
    if "system_fingerprint" in first:
        body["system_fingerprint"] = first["system_fingerprint"]
    return body


def hit_usage(stored: dict[str, Any] | None) -> dict[str, Any]:
    """Usage for a hit: nothing billed, and what the hit saved."""
    stored = stored or {}
    prompt = int(stored.get("prompt_tokens") or 0)
    completion = int(stored.get("completion_tokens") or 0)
    total = int(stored.get("total_tokens") or prompt + completion)
    return {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "saved_prompt_tokens": prompt,
        "saved_completion_tokens": completion,
        "saved_total_tokens": total,
    }


def replay_chunks(body: dict[str, Any], chunk_chars: int) -> list[dict[str, Any]]:
    """`body` (a `chat.completion`) as the `chat.completion.chunk` dicts a provider would have streamed."""
    base: dict[str, Any] = {k: body[k] for k in ("id", "created", "model", "system_fingerprint") if k in body}
    base["object"] = "chat.completion.chunk"

    def chunk(
        index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None
    ) -> dict[str, Any]:
        return {
            **base,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }

    chunks = []
    for choice in body.get("choices") or []:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        content = message.get("content")
        tools = message.get("tool_calls") or []
        logprobs = choice.get("logprobs")
        first: dict[str, Any] = {
            "role": message.get("role", "assistant"),
            "content": "" if content else content,
        }
        if message.get("refusal") is not None:
            first["refusal"] = message["refusal"]
        chunks.append(chunk(index, first))
        if content:
            # Logprobs belong to the tokens of one delta; keep them together with the whole content.
            pieces = (
                [content]
                if logprobs
                else [content[i : i + chunk_chars] for i in range(0, len(content), chunk_chars)]
            )
            chunks += [chunk(index, {"content": piece}, logprobs=logprobs) for piece in pieces]
        for i, tool in enumerate(tools):
            function = tool.get("function") or {}
            head = {"index": i, "id": tool.get("id"), "type": tool.get("type", "function")}
            chunks.append(
                chunk(
                    index,
                    {"tool_calls": [{**head, "function": {"name": function.get("name"), "arguments": ""}}]},
                )
            )
            if function.get("arguments"):
                chunks.append(
                    chunk(
                        index,
                        {"tool_calls": [{"index": i, "function": {"arguments": function["arguments"]}}]},
                    )
                )
        chunks.append(chunk(index, {}, choice.get("finish_reason")))
    chunks.append({**base, "choices": [], "usage": body.get("usage")})
    return chunks


# Below this size zlib's state setup costs more CPU (tens of µs) than the bytes it saves are worth.
_PLAIN_MAX = 2048
# A zlib stream's first byte is 0x78, so a plain entry's flag can never be mistaken for one; entries written
# before the flag existed (always zlib) still read.
_PLAIN = b"\x00"


def encode_entry(call: Call, body: dict[str, Any], generations: tuple[str, ...] = ()) -> bytes:
    """The stored form of an answer and the generation tokens it was looked up under
    (gateway/features/cache_generations.py): plain JSON behind a flag byte when small, else zlib-compressed.
    """
    data = jsonio.dumps({"endpoint": call.endpoint, "gen": list(generations), "body": body})
    if len(data) < _PLAIN_MAX:
        return _PLAIN + data
    return zlib.compress(data)


def decode_entry(raw: bytes) -> dict[str, Any] | None:
    """The answer body stored in `raw`; None for an unreadable entry (then it is a miss)."""
    return decode_entry_with_generations(raw)[0]


def decode_entry_with_generations(raw: bytes) -> tuple[dict[str, Any] | None, object]:
    """The answer body stored in `raw` (None when unreadable) and the generation tokens it recorded (None
    for an entry written before tokens existed: it never matches current tokens, so it is a miss)."""
    try:
        entry = jsonio.loads(raw[1:] if raw[:1] == _PLAIN else zlib.decompress(raw))
    except (zlib.error, ValueError):
        return None, None
    if not isinstance(entry, dict):
        return None, None
    body = entry.get("body")
    return (body if isinstance(body, dict) else None), entry.get("gen")
