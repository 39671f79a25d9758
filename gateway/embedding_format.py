"""The client's ``encoding_format`` for embeddings, applied once in the gateway.

Every provider answers float vectors: the route takes ``encoding_format`` out of the request before the
pipeline (:func:`float_request`) and encodes the answer for the client afterwards (:func:`client_answer`).
Converting here rather than passing the field upstream means the answer is right whatever the upstream
does with the field (Cohere and the mock have no such field; some OpenAI-compatible servers ignore it), and
one cached float answer serves clients asking for either format.

``base64`` is what OpenAI sends and its SDKs decode: the vector's float32 values, little-endian, as bytes,
base64-encoded.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from gateway.errors import upstream_error


def float_request(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``body`` without ``encoding_format`` (so upstreams answer floats), and whether base64 was asked."""
    wants_base64 = body.get("encoding_format") == "base64"
    return {k: v for k, v in body.items() if k != "encoding_format"}, wants_base64


def encode_vector(vector: list[float]) -> str:
    """OpenAI's base64 form of one vector: float32 little-endian bytes, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def client_answer(body: dict[str, Any], model: str, wants_base64: bool) -> dict[str, Any]:
    """The embeddings answer as the client asked for it; an answer that names no model names ``model``.

    A new dict: ``body`` may be a cached entry shared with other requests.
    """
    answer = dict(body)
    if not answer.get("model"):
        answer["model"] = model
    data = answer.get("data")
    if wants_base64 and isinstance(data, list):
        answer["data"] = [_encoded(item) for item in data]
    return answer


def _encoded(item: Any) -> Any:
    vector = item.get("embedding") if isinstance(item, dict) else None
    if not isinstance(vector, list):
        return item  # already a string (an upstream that answered base64 anyway) or not ours to touch
    try:
        return {**item, "embedding": encode_vector(vector)}
    except (struct.error, OverflowError):  # a non-number, or beyond float32's range
        raise upstream_error(
            502, "Upstream answered an embedding that is not a float32 vector.", "upstream_invalid"
        ) from None
