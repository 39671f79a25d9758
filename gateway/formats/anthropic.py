"""Anthropic Messages ⇄ canonical OpenAI chat: the mapping tables and the request/response translations.

Both edges of the gateway use this module:

- the ``/v1/messages`` route (``gateway/routes/anthropic.py``) turns an Anthropic request into the canonical
  request with :func:`request_to_chat` and the canonical answer back with :func:`chat_to_message`;
- the ``anthropic`` provider (``gateway/providers/anthropic.py``) does the reverse with
  :func:`chat_to_request` and :func:`message_to_chat`.

Value and parameter translations are the tables below, so each pair reads as data and the docs list them;
the functions only walk the structures (messages, content blocks, tools). Streams are in
``anthropic_stream.py``. Anthropic-only fields with no canonical meaning (``top_k``, ``thinking``,
``cache_control``...) are dropped on the way in, never forwarded to an upstream that would reject them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gateway.errors import GatewayError, invalid_request

ANTHROPIC_VERSION = "2023-06-01"
"""The ``anthropic-version`` the provider sends unless configured otherwise."""

STOP_REASON_OF_FINISH: Mapping[str, str] = MappingProxyType(
    {
        "stop": "end_turn",
        "length": "max_tokens",
        "tool_calls": "tool_use",
        "function_call": "tool_use",
        "content_filter": "refusal",
    }
)
"""Canonical ``finish_reason`` → Anthropic ``stop_reason``."""

FINISH_OF_STOP_REASON: Mapping[str, str] = MappingProxyType(
    {
        "end_turn": "stop",
        "stop_sequence": "stop",
        "pause_turn": "stop",
        "max_tokens": "length",
        "model_context_window_exceeded": "length",
        "tool_use": "tool_calls",
        "refusal": "content_filter",
    }
)
"""Anthropic ``stop_reason`` → canonical ``finish_reason``."""

SAME_PARAMS: Mapping[str, str] = MappingProxyType(
    {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "stream": "stream"}
)
"""Anthropic request fields copied to the canonical request under the name given (same meaning)."""

DROPPED_PARAMS: tuple[str, ...] = (
    "top_k",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
)
"""Anthropic request fields with no canonical equivalent: accepted on ``/v1/messages`` and dropped."""

MAPPED_PARAMS: frozenset[str] = frozenset(
    {*SAME_PARAMS, "model", "messages", "system", "stop_sequences", "tools", "tool_choice", "metadata"}
)
"""The top-level request fields :func:`request_to_chat` translates; any other is dropped."""

_PARAM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

TOOL_CHOICE_TO_CHAT: Mapping[str, str] = MappingProxyType({"auto": "auto", "any": "required", "none": "none"})
"""Anthropic ``tool_choice.type`` → canonical ``tool_choice`` (``{"type": "tool"}`` names a function)."""

TOOL_CHOICE_FROM_CHAT: Mapping[str, str] = MappingProxyType({v: k for k, v in TOOL_CHOICE_TO_CHAT.items()})
"""Canonical ``tool_choice`` string → Anthropic ``tool_choice.type``."""

ERROR_TYPE_OF_STATUS: Mapping[int, str] = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        502: "api_error",
        503: "overloaded_error",
        504: "api_error",
        529: "overloaded_error",
    }
)
"""HTTP status → the ``error.type`` of Anthropic's error envelope (other 4xx: invalid_request_error)."""

IMAGE_MARKER = "[image]"
"""What an image inside a ``tool_result`` becomes in the canonical (text-only) tool message."""

TEMPERATURE_MAX = 1.0
"""Anthropic's temperature range is 0-1 (OpenAI's 0-2): higher values are clamped, a documented loss."""


def obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: wire data is walked without trusting it."""
    return value if isinstance(value, dict) else {}


def error_type(status: int) -> str:
    """The Anthropic ``error.type`` for an HTTP status."""
    return ERROR_TYPE_OF_STATUS.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(error: GatewayError) -> dict[str, Any]:
    """``error`` in Anthropic's envelope: ``{"type": "error", "error": {"type", "message"}}``."""
    return {"type": "error", "error": {"type": error_type(error.status), "message": error.message}}


# --- Anthropic request → canonical request (the /v1/messages route) -------------------------------------


def _text_of_blocks(value: Any, where: str) -> str:
    """The text of a string or of a list of text blocks (``system``, ``tool_result.content``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, block in enumerate(value):
            if (
                not isinstance(block, dict)
                or block.get("type") != "text"
                or not isinstance(block.get("text"), str)
            ):
                raise invalid_request(f"{where}[{i}] must be a text block.", param=f"{where}[{i}]")
            texts.append(block["text"])
        return "\n".join(texts)
    raise invalid_request(f"'{where}' must be a string or an array of text blocks.", param=where)


def _tool_result_text(value: Any, where: str) -> str:
    """A tool result's text. Images in it (a screenshot a tool took) become a marker: canonical tool
    messages carry text only, and refusing the request would break clients such as Claude Code."""
    if isinstance(value, list):
        value = [
            {"type": "text", "text": IMAGE_MARKER} if isinstance(b, dict) and b.get("type") == "image" else b
            for b in value
        ]
    return _text_of_blocks(value, where)


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if isinstance(media, str) and isinstance(data, str):
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise invalid_request(
        f"{where}.source must be a base64 source (media_type, data) or a url source.", param=f"{where}.source"
    )


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise invalid_request(f"{where} needs a string 'id' and 'name'.", param=where)
    arguments = json.dumps(block.get("input", {}), separators=(",", ":"))
    return {
        "id": block["id"],
        "type": "function",
        "function": {"name": block["name"], "arguments": arguments},
    }


def _user_messages(content: list[Any], where: str) -> list[dict[str, Any]]:
    """A user turn's blocks: tool results become ``tool`` messages (first), the rest one user message."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise invalid_request(f"{at}.tool_use_id must be a string.", param=f"{at}.tool_use_id")
            text = _tool_result_text(block.get("content", ""), f"{at}.content")
            tools.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
        else:
            raise invalid_request(
                f"{at}: content blocks of type {kind!r} are not supported (text, image, tool_result).",
                param=at,
            )
    return tools + ([{"role": "user", "content": parts}] if parts else [])


def _assistant_message(content: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(_tool_call(block, at))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's own reasoning: no canonical place for it
        else:
            raise invalid_request(
                f"{at}: content blocks of type {kind!r} are not supported (text, tool_use).", param=at
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise invalid_request("'messages' is required and must be a non-empty array.", param="messages")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise invalid_request(f"{where}.role must be 'user' or 'assistant'.", param=f"{where}.role")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, list):
            where += ".content"
            out.extend(
                _user_messages(content, where) if role == "user" else [_assistant_message(content, where)]
            )
        else:
            raise invalid_request(
                f"{where}.content must be a string or an array of content blocks.", param=f"{where}.content"
            )
    return out


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid_request("'tools' must be an array.", param="tools")
    tools = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise invalid_request(f"{where} must be an object with a string 'name'.", param=where)
        if tool.get("type") not in (None, "custom"):
            raise invalid_request(
                f"{where}: server tools ({tool['type']}) are not supported; only client tools.", param=where
            )
        function: dict[str, Any] = {
            "name": tool["name"],
            "parameters": tool.get("input_schema", {"type": "object"}),
        }
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any, chat: dict[str, Any]) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "tool" and isinstance(value.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": value["name"]}}
    elif isinstance(kind, str) and kind in TOOL_CHOICE_TO_CHAT:
        chat["tool_choice"] = TOOL_CHOICE_TO_CHAT[kind]
    else:
        raise invalid_request(
            '\'tool_choice\' must be {"type": "auto" | "any" | "none"} or {"type": "tool", "name": ...}.',
            param="tool_choice",
        )
    if value.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def dropped_params(body: dict[str, Any]) -> list[str]:
    """The top-level fields of an Anthropic request that do not reach the canonical request, sorted.

    Only names that are safe in a response header are listed (a client's JSON keys may hold anything).
    """
    return sorted(name for name in body if name not in MAPPED_PARAMS and _PARAM_NAME.fullmatch(name))[:32]


def request_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The canonical chat request for an Anthropic Messages request; 400 naming the field when invalid."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("'model' is required and must be a non-empty string.", param="model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise invalid_request("'max_tokens' is required and must be a positive integer.", param="max_tokens")
    messages = _messages(body.get("messages"))
    if body.get("system") is not None:
        system = _text_of_blocks(body["system"], "system")
        messages.insert(0, {"role": "system", "content": system})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    for name, canonical in SAME_PARAMS.items():
        if body.get(name) is not None:
            chat[canonical] = body[name]
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise invalid_request("'stop_sequences' must be an array of strings.", param="stop_sequences")
        if stop:
            chat["stop"] = stop
    if body.get("tools") is not None:
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise invalid_request("'metadata' must be an object.", param="metadata")
        user_id = metadata.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise invalid_request("'metadata.user_id' must be a string.", param="metadata.user_id")
        if user_id is not None:
            chat["user"] = user_id
    return chat


# --- canonical response → Anthropic message (the /v1/messages route) -------------------------------------


def _arguments(raw: Any) -> Any:
    """Tool-call arguments (a JSON string) as the object Anthropic's ``input`` is."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def usage_to_anthropic(usage: Any) -> dict[str, int]:
    """Canonical ``usage`` → Anthropic ``usage`` (cache reads and writes are not part of Anthropic's
    input_tokens)."""
    usage = obj(usage)
    details = obj(usage.get("prompt_tokens_details"))

    def count(holder: dict[str, Any], name: str) -> int:
        value = holder.get(name)
        return value if isinstance(value, int) else 0

    cached, written = count(details, "cached_tokens"), count(details, "cache_creation_tokens")
    prompt, completion = count(usage, "prompt_tokens"), count(usage, "completion_tokens")
    out = {"input_tokens": max(prompt - cached - written, 0), "output_tokens": completion}
    if written:
        out["cache_creation_input_tokens"] = written
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def chat_to_message(body: dict[str, Any], message_id: str, model: str) -> dict[str, Any]:
    """The Anthropic ``message`` for a canonical chat completion body."""
    choices = body.get("choices")
    choice = obj(choices[0]) if isinstance(choices, list) and choices else {}
    message = obj(choice.get("message"))
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(
            p.get("text", "") for p in text if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or "",
                    "name": function.get("name") or "",
                    "input": _arguments(function.get("arguments")),
                }
            )
    finish = choice.get("finish_reason")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model") if isinstance(body.get("model"), str) else model,
        "content": content,
        "stop_reason": STOP_REASON_OF_FINISH.get(finish, "end_turn") if isinstance(finish, str) else None,
        "stop_sequence": None,
        "usage": usage_to_anthropic(body.get("usage")),
    }


# --- canonical request → Anthropic request (the anthropic provider) --------------------------------------


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _image_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise invalid_request(f"{where}.image_url.url must be a string.", param=where)
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media, _, encoding = header.partition(";")
        if encoding != "base64" or not data:
            raise invalid_request(f"{where}: only base64 data URLs are supported.", param=where)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """Canonical user content (a string or parts) as Anthropic content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return []
    blocks = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part, f"{where}[{i}]"))
        else:
            raise invalid_request(
                f"{where}[{i}]: content parts of type {kind!r} cannot be sent to an Anthropic upstream.",
                param=f"{where}[{i}]",
            )
    return blocks


def _turn(message: dict[str, Any], where: str) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "user":
        return "user", _blocks(message.get("content"), f"{where}.content")
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": str(message.get("tool_call_id") or ""),
            "content": _content_text(message.get("content")),
        }
        return "user", [result]
    if role == "assistant":
        blocks = _blocks(_content_text(message.get("content")), f"{where}.content")
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id") or "",
                        "name": function.get("name") or "",
                        "input": _arguments(function.get("arguments")),
                    }
                )
        return "assistant", blocks
    raise invalid_request(
        f"{where}.role {role!r} cannot be sent to an Anthropic upstream.", param=f"{where}.role"
    )


def _anthropic_tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            entry: dict[str, Any] = {
                "name": function["name"],
                "input_schema": function.get("parameters") or {"type": "object"},
            }
            if isinstance(function.get("description"), str):
                entry["description"] = function["description"]
            out.append(entry)
    return out


def chat_to_request(
    body: dict[str, Any], model: str, stream: bool, default_max_tokens: int
) -> dict[str, Any]:
    """The Anthropic Messages request for a canonical chat request sent to upstream ``model``."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(body.get("messages") or []):
        if message.get("role") in ("system", "developer"):
            system.append(_content_text(message.get("content")))
            continue
        role, blocks = _turn(message, f"messages[{i}]")
        if not blocks:
            continue  # Anthropic rejects empty content
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)  # consecutive turns of one role (tool results) merge
        else:
            messages.append({"role": role, "content": blocks})
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    request: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": limit if isinstance(limit, int) and limit > 0 else default_max_tokens,
    }
    if system:
        request["system"] = "\n\n".join(system)
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)):
        request["temperature"] = min(max(float(temperature), 0.0), TEMPERATURE_MAX)
    if body.get("top_p") is not None:
        request["top_p"] = body["top_p"]
    if isinstance(body.get("user"), str):
        request["metadata"] = {"user_id": body["user"]}
    tools = _anthropic_tools(body.get("tools"))
    if tools:
        request["tools"] = tools
        choice = body.get("tool_choice")
        anthropic_choice: dict[str, Any] | None = None
        if isinstance(choice, str) and choice in TOOL_CHOICE_FROM_CHAT:
            anthropic_choice = {"type": TOOL_CHOICE_FROM_CHAT[choice]}
        elif isinstance(choice, dict) and isinstance(obj(choice.get("function")).get("name"), str):
            anthropic_choice = {"type": "tool", "name": choice["function"]["name"]}
        if body.get("parallel_tool_calls") is False:
            anthropic_choice = {**(anthropic_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if anthropic_choice is not None:
            request["tool_choice"] = anthropic_choice
    if stream:
        request["stream"] = True
    return request


# --- Anthropic message → canonical response (the anthropic provider) -------------------------------------


def usage_to_chat(usage: Any) -> dict[str, Any]:
    """Anthropic ``usage`` → canonical ``usage``: cache reads and writes count as prompt tokens."""
    usage = obj(usage)

    def number(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) else 0

    cached = number("cache_read_input_tokens")
    prompt = number("input_tokens") + cached + number("cache_creation_input_tokens")
    completion = number("output_tokens")
    written = number("cache_creation_input_tokens")
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    details = {}
    if cached:
        details["cached_tokens"] = cached
    if written:
        # Not an OpenAI field: the gateway's own name, so cache writes can be priced at their own rate.
        details["cache_creation_tokens"] = written
    if details:
        out["prompt_tokens_details"] = details
    return out


def message_to_chat(data: dict[str, Any], created: int) -> dict[str, Any]:
    """The canonical chat completion body for an Anthropic ``message``."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id") or "",
                    "type": "function",
                    "function": {
                        "name": block.get("name") or "",
                        "arguments": json.dumps(block.get("input") or {}, separators=(",", ":")),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    stop = data.get("stop_reason")
    return {
        "id": data.get("id") or "",
        "object": "chat.completion",
        "created": created,
        "model": data.get("model") or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_OF_STOP_REASON.get(stop, "stop") if isinstance(stop, str) else "stop",
            }
        ],
        "usage": usage_to_chat(data.get("usage")),
    }
