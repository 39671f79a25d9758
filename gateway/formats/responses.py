"""OpenAI's Responses API (``/v1/responses``) to and from the canonical chat call.

The mapping is data where it is data: :data:`CARRIED` lists the parameters that mean the same in a chat
request, :data:`RENAMED` those that only change name, :data:`KEPT` those the gateway itself answers
(echoed on the response object, never sent upstream), and :data:`REFUSED` those the gateway cannot honour
on a chat upstream, each refused with a 400 naming it unless set to the value that asks for nothing.
Anything else is refused too, so no field is ever silently dropped.

The conversation is handled in Responses *items* (messages, ``function_call``, ``function_call_output``)
until the last moment: :func:`request_items` gives the new input as items, a stored response's items plus
its output items rebuild the conversation for ``previous_response_id``, and :func:`items_to_messages`
translates the whole list to chat messages once.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.errors import invalid_request

CARRIED = frozenset({"model", "temperature", "top_p", "user", "parallel_tool_calls", "stream"})
"""Responses parameters that mean the same in a chat request."""

RENAMED: Mapping[str, str] = {"max_output_tokens": "max_completion_tokens"}
"""Responses parameter -> chat parameter with the same meaning."""

KEPT = frozenset({"input", "instructions", "tools", "tool_choice", "text", "metadata", "store"})
"""Parameters translated by their own functions below, or answered by the gateway (``metadata`` and
``store`` belong to the stored response object, not to the model call)."""

PREVIOUS = "previous_response_id"

REFUSED: Mapping[str, tuple[Any, ...]] = {
    "background": (False,),
    "reasoning": (),
    "include": ([],),
    "truncation": ("disabled",),
    "prompt": (),
    "conversation": (),
    "max_tool_calls": (),
    "top_logprobs": (0,),
    "service_tier": ("auto", "default"),
    "stream_options": ({"include_obfuscation": False},),
    "prompt_cache_key": (),
    "prompt_cache_retention": (),
    "safety_identifier": (),
}
"""Parameters a chat upstream cannot honour, with the values that ask for nothing (and so are accepted):
``background`` needs a job queue the gateway does not keep, ``reasoning`` and ``include`` ask for reasoning
items chat does not return, ``conversation`` and ``prompt`` name objects stored at OpenAI."""

TOOL_CHOICES = frozenset({"auto", "none", "required"})

FUNCTION_FIELDS = ("name", "description", "parameters", "strict")
"""The fields of a flat Responses function tool that chat's ``tools[].function`` holds; any other
(``defer_loading``, ``output_schema``...) is refused unless unset or false."""

TEXT_FORMATS: Mapping[str, tuple[str, ...]] = {
    "text": (),
    "json_object": (),
    "json_schema": ("name", "schema", "description", "strict"),
}
"""``text.format`` types and the fields of each that ``response_format.json_schema`` carries."""

INPUT_PARTS: Mapping[str, str] = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
"""Message content part type -> the field holding its text (``input_image`` has its own function)."""

FINISH_STATUS: Mapping[str | None, tuple[str, str | None]] = {
    "stop": ("completed", None),
    "tool_calls": ("completed", None),
    "function_call": ("completed", None),
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}
"""Chat ``finish_reason`` -> Responses (``status``, ``incomplete_details.reason``)."""


def _refuse(field: str, why: str = "is not supported on /v1/responses by this gateway") -> Exception:
    return invalid_request(f"'{field}' {why}.", param=field)


def request_to_chat(body: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The canonical chat request for a Responses ``body`` whose conversation is ``items`` (the stored
    history for ``previous_response_id`` followed by :func:`request_items`); 400 naming what it cannot
    serve."""
    chat: dict[str, Any] = {}
    for name, value in body.items():
        if value is None or name in KEPT or name == PREVIOUS:
            continue
        if name in REFUSED:
            allowed = REFUSED[name]
            if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
                raise _refuse(name)
        elif name in CARRIED:
            chat[name] = value
        elif name in RENAMED:
            chat[RENAMED[name]] = value
        else:
            raise _refuse(name, "is not a parameter of /v1/responses")
    messages = items_to_messages(items)
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _refuse("instructions", "must be a string")
        messages.insert(0, {"role": "system", "content": instructions})
    if not messages:
        raise _refuse("input", "is required")
    chat["messages"] = messages
    if body.get("tools"):
        chat["tools"] = [_tool(tool, i) for i, tool in enumerate(body["tools"])]
    else:
        # Meaningless without tools (Responses accepts it anyway), and OpenAI's chat refuses it there.
        chat.pop("parallel_tool_calls", None)
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if chat.get("stream"):
        # The translation needs the usage for response.completed, whatever the client asked.
        chat["stream_options"] = {"include_usage": True}
    return chat


def request_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items (a string is one user message)."""
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return [dict(item) for item in value]
    raise _refuse("input", "must be a string or an array of input items")


# --- input items -> chat messages --------------------------------------------------------------------------


def items_to_messages(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages for a list of Responses input items; consecutive ``function_call`` items (and the
    assistant text before them) become one assistant message with ``tool_calls``, as chat expects."""
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, f"input[{i}]"))
        elif kind == "function_call":
            call = _function_call(item, f"input[{i}]")
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(_function_output(item, f"input[{i}]"))
        else:
            raise _refuse(f"input[{i}].type", f"'{kind}' is not an input item type this gateway serves")
    return messages


def _message(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise _refuse(f"{where}.role", "must be one of 'user', 'assistant', 'system', 'developer'")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _refuse(f"{where}.content", "must be a string or an array of content parts")
    parts = [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    if role != "user" and all(part["type"] == "text" for part in parts):
        # Only user messages may hold parts other than text in chat; plain text keeps every upstream happy.
        return {"role": role, "content": "".join(part["text"] for part in parts)}
    return {"role": role, "content": parts}


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = str(part.get("type")) if isinstance(part, dict) else None
    if kind is not None and kind in INPUT_PARTS:
        field = INPUT_PARTS[kind]
        text = part.get(field)
        if not isinstance(text, str):
            raise _refuse(f"{where}.{field}", "must be a string")
        return {"type": "text", "text": text}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            # file_id names a file uploaded to OpenAI, which a chat upstream cannot read.
            raise _refuse(f"{where}.image_url", "is required (file_id is not supported by this gateway)")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise _refuse(f"{where}.type", f"'{kind}' is not a content part type this gateway serves")


def _function_call(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    for field in ("call_id", "name", "arguments"):
        if not isinstance(item.get(field), str):
            raise _refuse(f"{where}.{field}", "is required and must be a string")
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }


def _function_output(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(item.get("call_id"), str):
        raise _refuse(f"{where}.call_id", "is required and must be a string")
    output = item.get("output")
    if isinstance(output, list):
        output = "".join(_part(part, f"{where}.output[{j}]").get("text", "") for j, part in enumerate(output))
    if not isinstance(output, str):
        raise _refuse(f"{where}.output", "must be a string or an array of text parts")
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output}


# --- tools, tool_choice, text.format ------------------------------------------------------------------------


def _tool(tool: Any, index: int) -> dict[str, Any]:
    where = f"tools[{index}]"
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        # Built-in tools (web_search, file_search, code_interpreter...) run at OpenAI, not on a chat upstream.
        raise _refuse(f"{where}.type", f"'{kind}' is not supported by this gateway (only 'function' tools)")
    if not isinstance(tool.get("name"), str):
        raise _refuse(f"{where}.name", "is required and must be a string")
    for field, value in tool.items():
        if field not in FUNCTION_FIELDS and field != "type" and value not in (None, False):
            raise _refuse(f"{where}.{field}", "is not supported on function tools by this gateway")
    function = {field: tool[field] for field in FUNCTION_FIELDS if tool.get(field) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _refuse("tool_choice", "must be 'auto', 'none', 'required' or {'type': 'function', 'name': ...}")


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _refuse("text", "must be an object")
    for field, value in text.items():
        if field != "format" and value is not None:
            raise _refuse(f"text.{field}", "is not supported on /v1/responses by this gateway")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if not isinstance(kind, str) or kind not in TEXT_FORMATS:
        raise _refuse("text.format.type", "must be 'text', 'json_object' or 'json_schema'")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
        raise _refuse("text.format", "needs 'name' (a string) and 'schema' (an object) for json_schema")
    spec = {field: fmt[field] for field in TEXT_FORMATS[kind] if fmt.get(field) is not None}
    return {"type": "json_schema", "json_schema": spec}


# --- chat answer -> response object -------------------------------------------------------------------------


def response_shell(body: Mapping[str, Any], response_id: str, created_at: int) -> dict[str, Any]:
    """The ``response`` object for ``body`` before any output: what the request asked for, echoed as
    OpenAI does, ``status: in_progress``."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": body.get("model"),
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get(PREVIOUS),
        "temperature": body.get("temperature"),
        "text": {"format": (body.get("text") or {}).get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [{**tool, "strict": tool.get("strict")} for tool in body.get("tools") or []],
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": body.get("user"),
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    """An assistant ``message`` output item holding ``text``."""
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": [part]}


def function_call_item(item_id: str, call: Mapping[str, Any], status: str = "completed") -> dict[str, Any]:
    """A ``function_call`` output item for a chat ``tool_calls`` entry."""
    function = call.get("function") or {}
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.get("id") or item_id,
        "name": function.get("name") or "",
        "arguments": function.get("arguments") or "",
    }


def usage_to_response(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Responses ``usage`` (input/output tokens with details) from chat ``usage``."""
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int(details.get("cached_tokens") or 0),
            "cache_write_tokens": int(details.get("cache_write_tokens") or 0),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def finish(response: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    """``response`` with the ``status`` and ``incomplete_details`` a chat ``finish_reason`` means."""
    status, reason = FINISH_STATUS.get(finish_reason, ("completed", None))
    response["status"] = status
    response["incomplete_details"] = {"reason": reason} if reason else None
    return response


def chat_to_response(chat: Mapping[str, Any], shell: Mapping[str, Any]) -> dict[str, Any]:
    """The finished ``response`` object for a canonical ``chat.completion`` (``shell`` from
    :func:`response_shell`); item ids derive from the response id, so they are unique and stable."""
    response = dict(shell)
    suffix = str(shell["id"]).removeprefix("resp_")
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("content") or not message.get("tool_calls"):
        output.append(message_item(f"msg_{suffix}", message.get("content") or ""))
    for i, call in enumerate(message.get("tool_calls") or []):
        output.append(function_call_item(f"fc_{suffix}_{i}", call))
    response["output"] = output
    response["usage"] = usage_to_response(chat.get("usage"))
    if chat.get("model"):
        response["model"] = chat["model"]
    finish(response, choice.get("finish_reason"))
    if response["status"] == "incomplete":
        for item in output:
            item["status"] = "incomplete"
    return response


def output_text(response: Mapping[str, Any]) -> str:
    """All ``output_text`` of a response, joined (what the SDK's ``response.output_text`` shows)."""
    return "".join(
        part.get("text", "")
        for item in response.get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    )


def history(stored_input: Sequence[Mapping[str, Any]], response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conversation a follow-up with ``previous_response_id`` continues: the stored response's own
    input items (its history included), then its output items as they are (OpenAI accepts output items as
    input, and :func:`items_to_messages` reads them)."""
    return copy.deepcopy([*stored_input, *(response.get("output") or [])])


# --- stored input items -> GET /v1/responses/{id}/input_items ----------------------------------------------

_LISTED_IDS: Mapping[str, str] = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}
"""Item type -> the id prefix OpenAI uses; items sent without an id get ``<prefix>_<response>_in<n>``."""


def listed_items(items: Sequence[Mapping[str, Any]], response_id: str) -> list[dict[str, Any]]:
    """The stored input ``items`` as the typed items ``input_items`` lists: each with an ``id`` and a
    ``status``, message content as parts (assistant turns as ``output_text``)."""
    suffix = response_id.removeprefix("resp_")
    listed = []
    for i, item in enumerate(items):
        kind = str(item.get("type", "message"))
        entry: dict[str, Any] = {
            "id": item.get("id") or f"{_LISTED_IDS.get(kind, 'item')}_{suffix}_in{i}",
            "type": kind,
            "status": "completed",
        }
        if kind == "message":
            entry["role"] = item.get("role")
            entry["content"] = _listed_content(item.get("content"), assistant=item.get("role") == "assistant")
        else:
            entry.update(
                (key, item[key]) for key in ("call_id", "name", "arguments", "output") if key in item
            )
        listed.append(entry)
    return listed


def _listed_content(content: Any, *, assistant: bool) -> list[dict[str, Any]]:
    parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else list(content or [])
    if assistant:
        texts = [p.get("text") or p.get("refusal") or "" for p in parts]
        return [{"type": "output_text", "text": "".join(texts), "annotations": [], "logprobs": []}]
    return [
        {**p, "detail": p.get("detail") or "auto"} if p.get("type") == "input_image" else dict(p)
        for p in parts
    ]
