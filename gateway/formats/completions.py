"""OpenAI's legacy text completions (``/v1/completions``) to and from the canonical chat call.

The mapping is data: :data:`CARRIED` lists the parameters that mean the same in a chat request and are
copied as they are; :data:`REFUSED` lists those with no chat equivalent the gateway could honour (each
refused with a 400 naming it unless set to its neutral value). Anything else is refused too, so no field
is ever silently ignored. ``prompt`` becomes one user message; a list of several prompts (one choice
each, in OpenAI's legacy API) or token-id prompts are refused rather than half-served.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import invalid_request

CARRIED = frozenset(
    {
        "model",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "seed",
        "user",
        "stream",
        "stream_options",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
    }
)
"""Completion parameters that mean the same in a chat request."""

REFUSED: Mapping[str, tuple[Any, ...]] = {
    "echo": (False,),
    "best_of": (1,),
    "suffix": ("",),
    "logprobs": (0,),
}
"""Parameters chat cannot express, with the values that ask for nothing (and so are accepted)."""


def request_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical chat request for a completions ``body``; 400 naming the field it cannot serve."""
    chat: dict[str, Any] = {}
    for name, value in body.items():
        if value is None or name == "prompt":
            continue
        if name in REFUSED:
            if value not in REFUSED[name] or isinstance(value, bool) != isinstance(REFUSED[name][0], bool):
                raise invalid_request(
                    f"'{name}' is not supported on /v1/completions by this gateway.", param=name
                )
        elif name in CARRIED:
            chat[name] = value
        else:
            raise invalid_request(f"Unknown parameter '{name}' for /v1/completions.", param=name)
    chat["messages"] = [{"role": "user", "content": _prompt(body.get("prompt"))}]
    return chat


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) and prompt:
        raise invalid_request(
            "'prompt' holds several prompts; send one per request (or use 'n' for several choices).",
            param="prompt",
        )
    raise invalid_request("'prompt' is required and must be a string.", param="prompt")


def _choice(choice: Mapping[str, Any], text: str) -> dict[str, Any]:
    return {
        "text": text,
        "index": choice.get("index", 0),
        "logprobs": None,
        "finish_reason": choice.get("finish_reason"),
    }


def _envelope(chat: Mapping[str, Any], model: str) -> dict[str, Any]:
    # The chat id keeps its unique part; "cmpl-" marks it as a completion for clients that look.
    identifier = str(chat.get("id") or "")
    return {
        "id": "cmpl-" + identifier.removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": chat.get("created", 0),
        "model": chat.get("model") or model,
    }


def chat_to_completion(chat: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A ``text_completion`` object from a canonical ``chat.completion`` (or an error body unchanged)."""
    if "choices" not in chat:
        return dict(chat)
    choices = [_choice(c, (c.get("message") or {}).get("content") or "") for c in chat["choices"]]
    completion = {**_envelope(chat, model), "choices": choices}
    if "usage" in chat:
        completion["usage"] = chat["usage"]
    return completion


def chunk_to_completion(chunk: Mapping[str, Any], model: str) -> dict[str, Any] | None:
    """A streamed ``text_completion`` chunk from a ``chat.completion.chunk``; ``None`` when it says nothing
    a completions client can see (the role-only opening delta)."""
    choices = [
        _choice(c, (c.get("delta") or {}).get("content") or "")
        for c in chunk.get("choices") or []
        if (c.get("delta") or {}).get("content") or c.get("finish_reason")
    ]
    if not choices and not chunk.get("usage"):
        return None
    completion: dict[str, Any] = {**_envelope(chunk, model), "choices": choices}
    if chunk.get("usage"):
        completion["usage"] = chunk["usage"]
    return completion
