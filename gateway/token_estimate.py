"""Token counts without a tokenizer: a realistic estimate and a safe upper bound.

Exact tokenizers (tiktoken and friends) download their vocabularies from the network on first use, which a
gateway must not depend on, and every provider tokenizes differently anyway. Two numbers are enough:

- ``estimate_*``: a realistic guess, used for the usage ledger when an upstream reports no usage (the record
  is then labelled ``estimated``). About four ASCII characters per token, one token per non-ASCII character
  (CJK text is close to that), plus the chat format's per-message overhead.
- ``max_prompt_tokens``: an upper bound, used to reserve budget before forwarding. Byte-level BPE tokenizers
  (OpenAI's, Anthropic's, Llama's) never produce more tokens than the text has UTF-8 bytes, so the byte length
  of the serialized messages, which also counts JSON quotes and keys, bounds the real count. Images get a
  fixed allowance per image part.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway import jsonio

# OpenAI's chat format costs about 3 tokens per message (role markers) plus 3 to prime the reply.
_PER_MESSAGE = 4
_REPLY_PRIMING = 3
# High-detail images cost at most about 1,100 tokens on gpt-4o and about 1,600 on the patch-based models.
IMAGE_TOKEN_ALLOWANCE = 1600


def estimate_text_tokens(text: str) -> int:
    """A realistic token count for ``text``: ASCII characters / 4 plus one per non-ASCII character."""
    if not text:
        return 0
    if text.isascii():  # the common case, without a Python-level loop over every character
        return math.ceil(len(text) / 4)
    non_ascii = sum(1 for ch in text if ord(ch) > 127)
    return math.ceil((len(text) - non_ascii) / 4) + non_ascii


def _text_parts(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, Sequence):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield part["text"]


def _image_parts(content: Any) -> int:
    if isinstance(content, str) or not isinstance(content, Sequence):
        return 0
    return sum(1 for part in content if isinstance(part, Mapping) and part.get("type") == "image_url")


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """A realistic prompt token count for chat ``messages`` (dicts in the OpenAI format)."""
    total = _REPLY_PRIMING
    for message in messages:
        total += _PER_MESSAGE
        for text in _text_parts(message.get("content")):
            total += estimate_text_tokens(text)
        total += _image_parts(message.get("content")) * IMAGE_TOKEN_ALLOWANCE
    return total


def estimate_completion_tokens(texts: Iterable[str]) -> int:
    """A realistic token count for the generated ``texts`` (message contents or stream deltas)."""
    return sum(estimate_text_tokens(text) for text in texts)


def max_prompt_tokens(messages: Sequence[Mapping[str, Any]], tools: Any = None) -> int:
    """An upper bound on the prompt tokens any byte-level BPE tokenizer gives ``messages`` and ``tools``."""
    # One C call (gateway/jsonio.py) over the parsed messages: the bound needs their UTF-8 length only.
    total = len(jsonio.dumps(messages)) + _REPLY_PRIMING + _PER_MESSAGE * len(messages)
    if tools:
        total += len(jsonio.dumps(tools))
    total += sum(_image_parts(message.get("content")) for message in messages) * IMAGE_TOKEN_ALLOWANCE
    return total
