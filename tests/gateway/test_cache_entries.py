"""Cache entry formats: small entries plain behind a flag byte, large ones zlib, old zlib entries read."""

from __future__ import annotations

import json
import zlib
from typing import Any

from test_cache import chat, make_call

from gateway.features.cache_entries import decode_entry, decode_entry_with_generations, encode_entry


def answer(content: str) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }


def test_small_entry_is_stored_plain_and_reads_back() -> None:
    body = answer("short answer")
    raw = encode_entry(make_call(chat("hi")), body, ("g1", "g2", "g3", "g4"))
    assert raw[:1] == b"\x00"
    assert json.loads(raw[1:]) == {"endpoint": "chat", "gen": ["g1", "g2", "g3", "g4"], "body": body}
    assert decode_entry(raw) == body
    assert decode_entry_with_generations(raw) == (body, ["g1", "g2", "g3", "g4"])


def test_large_entry_is_compressed_and_reads_back() -> None:
    body = answer("word " * 2000)
    raw = encode_entry(make_call(chat("hi")), body)
    assert json.loads(zlib.decompress(raw)) == {"endpoint": "chat", "gen": [], "body": body}
    assert len(raw) < 2048
    assert decode_entry(raw) == body


def test_entry_written_by_an_older_version_still_reads() -> None:
    body = answer("stored before the flag byte")
    old = zlib.compress(json.dumps({"endpoint": "chat", "body": body}, separators=(",", ":")).encode())
    assert decode_entry(old) == body
    # It recorded no generation tokens, so the cache stage treats it as a miss (it predates purges).
    assert decode_entry_with_generations(old) == (body, None)


def test_unreadable_entries_are_misses() -> None:
    assert decode_entry(b"\x00not json") is None
    assert decode_entry(b"garbage") is None
    assert decode_entry(b"") is None
    assert decode_entry(b"\x00[1, 2]") is None
