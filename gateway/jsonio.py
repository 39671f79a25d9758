"""The gateway's JSON: one module every hot-path encode and decode goes through, bytes in and bytes out.

Measured on the gateway's own payloads (``python bench/json_codecs.py``; CPU time per call, 2-core EPYC VM):

    payload                      op        stdlib   orjson 3.13   msgspec 0.23
    chat request, 156 B          decode    2.8 us   0.63 (4.4x)   0.57 (4.8x)
                                 encode    3.9 us   0.17 (23x)    0.27 (15x)
    chat request, 9 KB, tools    decode   24.1 us   15.4 (1.6x)   13.5 (1.8x)
                                 encode   45.4 us   1.9  (24x)    5.2  (8.7x)
    chat answer, 346 B           decode    4.5 us   1.05 (4.2x)   1.03 (4.3x)
                                 encode    5.7 us   0.31 (18x)    0.48 (12x)

orjson encodes 1.5 to 3 times faster than msgspec and decodes within 15 % of it; a request does more
encodes (upstream body, answer or SSE chunks, cache key and entry) than decodes, so orjson it is.

One difference matters: orjson decodes an integer beyond 64 bits as a float, silently, where the standard
library keeps it exact. :func:`gateway.schema.parse_json` therefore falls back to the standard library for
the rare client body holding an integral float outside the 64-bit range (so the 400 naming that field stays)
and for every body orjson refuses (so the 400's wording, and what is accepted, stay the standard library's).

Output is compact UTF-8 (no ``\\uXXXX`` escapes for non-ASCII text): valid JSON, and what OpenAI sends too.
Call the functions through the module (``jsonio.dumps(...)``), so a test can count them.
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
"""Raised by :func:`loads` for invalid JSON (a subclass of ``ValueError``)."""


def loads(raw: bytes | str) -> Any:
    """The value of the JSON document ``raw`` (UTF-8 bytes or text)."""
    return orjson.loads(raw)


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON bytes (dicts with string keys, lists, str, int, float, bool, None)."""
    return orjson.dumps(value)


def dumps_sorted(value: Any) -> bytes:
    """``value`` as compact JSON with every object's keys sorted: a canonical form to hash (cache keys)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
