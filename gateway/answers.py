"""Upstream answers are untrusted input: the checks they pass before they touch money, the cache or a client.

Every HTTP provider (``providers/base.py``) runs a complete answer through :func:`check_answer` and every
stream chunk through :func:`check_chunk`. A malformed answer is a 502 naming what was wrong (in-band for a
stream whose headers are sent), never a 200 or a 500, and so never cached.

Usage is checked by :func:`usage_counts`, the one place that decides whether an upstream's token counts can be
charged: non-negative integers (not booleans, strings or floats) of at most :data:`MAX_TOKENS` each. A usage
that fails is not an error for the client (the answer itself is fine): the provider blanks it (``usage:
null``) and the usage stage estimates the tokens instead, labelled ``usage_source: estimated``.

The checks are hand-written and shallow, like the request side (``gateway/schema.py``): they cover what the
gateway and OpenAI clients rely on (``choices`` a non-empty list of objects with a ``message`` object, an
embeddings ``data`` list) and let every other field pass, so compatible upstreams that omit ``id`` or add
fields of their own keep working. The openai SDK's pydantic models would reject those and cost a model
validation per chunk on the hot path.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import GatewayError, upstream_error

# No single request has ever used a billion tokens (the largest context windows hold a few million): a count
# above this is a bug or an attack, and charging it would exhaust any budget.
MAX_TOKENS = 10**9

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS


def usage_counts(usage: Any) -> tuple[int, int] | str:
    """``(prompt_tokens, completion_tokens)`` of an upstream ``usage``, or why it cannot be trusted.

    ``prompt_tokens`` is required; ``completion_tokens`` may be absent (embeddings) and counts 0.
    """
    if not isinstance(usage, dict):
        return f"usage is {_kind(usage)}, not an object"
    if "prompt_tokens" not in usage:
        return "usage.prompt_tokens is missing"
    for name in USAGE_FIELDS:
        if name in usage and not _count(usage[name]):
            return f"usage.{name} is {_show(usage[name])}, not an integer from 0 to {MAX_TOKENS}"
    return usage["prompt_tokens"], usage.get("completion_tokens", 0)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def malformed(provider: str, what: str) -> GatewayError:
    """502: the upstream's answer is not a valid OpenAI answer; ``what`` names the field."""
    return upstream_error(502, f"Upstream '{provider}' sent a malformed answer: {what}.", "upstream_invalid")


def _choices_problem(choices: Any, part: str) -> str | None:
    if not isinstance(choices, list):
        return f"'choices' is {_kind(choices)}, not an array"
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            return f"choices[{i}] is {_kind(choice)}, not an object"
        if part in choice and choice[part] is not None and not isinstance(choice[part], dict):
            return f"choices[{i}].{part} is {_kind(choice[part])}, not an object"
    return None


def answer_problem(endpoint: str, body: Any) -> str | None:
    """What is wrong with a complete answer for ``endpoint`` (``chat`` or ``embeddings``), or None."""
    if not isinstance(body, dict):
        return f"the body is {_kind(body)}, not an object"
    if endpoint == "embeddings":
        data = body.get("data")
        if not isinstance(data, list):
            return "'data' is missing" if "data" not in body else f"'data' is {_kind(data)}, not an array"
        bad = next((i for i, item in enumerate(data) if not isinstance(item, dict)), None)
        return None if bad is None else f"data[{bad}] is {_kind(data[bad])}, not an object"
    if "choices" not in body:
        return "'choices' is missing"
    problem = _choices_problem(body["choices"], "message")
    if problem is None and not body["choices"]:
        problem = "'choices' is empty"
    if problem is None:
        bad = next((i for i, c in enumerate(body["choices"]) if not isinstance(c.get("message"), dict)), None)
        if bad is not None:
            problem = f"choices[{bad}].message is missing"
    return problem


def chunk_problem(chunk: Any) -> str | None:
    """What is wrong with one canonical ``chat.completion.chunk``, or None."""
    if not isinstance(chunk, dict):
        return f"a stream chunk is {_kind(chunk)}, not an object"
    if "choices" not in chunk:
        return None if "usage" in chunk else "a stream chunk has neither 'choices' nor 'usage'"
    problem = _choices_problem(chunk["choices"], "delta")
    return None if problem is None else f"a stream chunk's {problem}"


def checked_usage(holder: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``holder`` (an answer or a chunk) with an untrustworthy ``usage`` blanked, and why it was (or None).

    A copy is made only when something is blanked.
    """
    usage = holder.get("usage")
    if usage is None:
        return holder, None
    counts = usage_counts(usage)
    if not isinstance(counts, str):
        return holder, None
    return {**holder, "usage": None}, counts
