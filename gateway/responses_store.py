"""Stored responses of the Responses API: ``GET``/``DELETE /v1/responses/{id}`` and ``previous_response_id``.

A response is kept (unless the request says ``store: false``) in the gateway's state store, memory or
Redis as the config's ``state`` says, through the :class:`~gateway.stores.Store` interface, so every
replica sharing a Redis can continue a conversation another replica started. Each entry holds the
``response`` object and the input items that led to it (the whole conversation, previous responses
included), which is what a follow-up with ``previous_response_id`` continues.

Entries are scoped to the calling key: the store key holds the key's hashed id, so another key's
``GET``, ``DELETE`` or ``previous_response_id`` finds nothing and answers 404, exactly as for an id that
never existed (no oracle for which ids exist).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import GatewayError
from gateway.stores import Store, store_key

THIRTY_DAYS_S = 30 * 24 * 3600


class ResponsesConfig(BaseModel):
    """``features.responses``: how long stored responses are kept."""

    model_config = ConfigDict(extra="forbid")

    # OpenAI keeps stored responses for 30 days; clients written for it expect previous_response_id to
    # work that long. The memory store also evicts least-recently-used entries when it is full.
    store_ttl_s: float = Field(
        default=THIRTY_DAYS_S, gt=0, description="seconds a stored response (and its input) is kept"
    )


@dataclass(frozen=True)
class StoredResponse:
    """A stored ``response`` object and the input items it answered (its history included)."""

    response: dict[str, Any]
    input: list[dict[str, Any]]


def not_found(response_id: str, param: str | None = None) -> GatewayError:
    """404 for a response id this key has not stored (or that expired, or belongs to another key)."""
    return GatewayError(
        404, f"Response with id '{response_id}' not found.", "invalid_request_error", "not_found", param=param
    )


class ResponseStore:
    """Stored responses in ``store`` under ``gw:resp:<key id>:<response id>``, kept ``ttl_s`` seconds."""

    def __init__(self, store: Store, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s

    @staticmethod
    def _key(key_id: str, response_id: str) -> str:
        return store_key("resp", key_id, response_id)

    async def save(self, key_id: str, response: dict[str, Any], items: Sequence[dict[str, Any]]) -> None:
        """Keep ``response`` and the input ``items`` it answered, for ``key_id`` only."""
        value = json.dumps({"response": response, "input": list(items)}, separators=(",", ":"))
        await self.store.set(self._key(key_id, response["id"]), value.encode(), self.ttl_s)

    async def load(self, key_id: str, response_id: str, param: str | None = None) -> StoredResponse:
        """The stored response ``response_id`` of ``key_id``; 404 (naming ``param``) when there is none."""
        raw = await self.store.get(self._key(key_id, response_id))
        if raw is None:
            raise not_found(response_id, param)
        data = json.loads(raw)
        return StoredResponse(data["response"], data["input"])

    async def delete(self, key_id: str, response_id: str) -> None:
        """Forget ``response_id`` of ``key_id``; 404 when there is none."""
        await self.load(key_id, response_id)
        await self.store.delete(self._key(key_id, response_id))
