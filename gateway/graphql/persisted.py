"""Persisted queries (``features.graphql.persisted_queries``): a client sends a query's sha256 instead of its
text, as Apollo's automatic persisted queries (APQ) define it (``extensions.persistedQuery.sha256Hash``,
``version: 1``).

- ``off`` (the default): a request naming a hash is answered ``PERSISTED_QUERY_NOT_SUPPORTED``, which
  tells an APQ client to send full queries from then on.
- ``automatic``: a hash the gateway knows runs its query; an unknown one is ``PersistedQueryNotFound``
  (``PERSISTED_QUERY_NOT_FOUND``), and the client sends the hash again with the query, which is checked
  against the hash, run, and kept in the shared state store for ``persisted_queries_ttl_s`` (so every
  replica sharing ``state.redis_url`` knows it). Full queries without a hash run as usual.
- ``allowlist``: only the operations of ``persisted_queries_file`` run, named by their hash or sent in
  full (the text must be exactly one of the file's); anything else is ``PERSISTED_QUERY_NOT_IN_LIST``,
  subscriptions over WebSocket included. Nothing is registered at run time.

This module knows nothing of strawberry: ``gateway.graphql.schema`` calls :meth:`PersistedQueries.resolve`
before running an operation and turns a :class:`PersistedQueryError` into a GraphQL error.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.stores.base import Store, StoreUnavailable, store_key

Mode = Literal["off", "automatic", "allowlist"]
SHA256 = re.compile(r"[0-9a-f]{64}")
SETTING = "features.graphql.persisted_queries"


class PersistedQueryError(Exception):
    """An operation refused for its persisted query: ``code`` is the GraphQL error's ``extensions.code``."""

    def __init__(self, code: str, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def sha256_hex(query: str) -> str:
    """The hash APQ names a query by: sha256 of its exact UTF-8 text, lowercase hex."""
    return hashlib.sha256(query.encode()).hexdigest()


def load_allowlist(path: Path) -> dict[str, str]:
    """The operations of an allowlist file by hash; ``ValueError`` naming the problem when it is unusable.

    Two formats: Apollo's persisted query manifest (``{"format": "apollo-persisted-query-manifest",
    "operations": [{"id": "<sha256>", "body": "<query>", ...}]}``, what ``generate-persisted-query-manifest``
    writes), or a plain JSON object ``{"<sha256>": "<query>"}`` (Relay's ``persisted_queries.json``). Every
    hash is checked against its query, so a stale or hand-edited file fails at start, not at run time.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    pairs: list[tuple[Any, Any]]
    if isinstance(data, dict) and isinstance(data.get("operations"), list):
        pairs = [
            (op.get("id"), op.get("body")) if isinstance(op, dict) else (None, None)
            for op in data["operations"]
        ]
    elif isinstance(data, dict) and "operations" not in data:
        pairs = list(data.items())
    else:
        raise ValueError(f"{path}: expected Apollo's manifest or an object of sha256 -> query")
    operations: dict[str, str] = {}
    for i, (digest, query) in enumerate(pairs):
        if not isinstance(digest, str) or not isinstance(query, str):
            raise ValueError(f"{path}: operation {i} needs a sha256 id and a query string")
        if sha256_hex(query) != digest:
            raise ValueError(
                f"{path}: operation {i} ({digest[:12]}...): the id is not the sha256 of its query"
            )
        operations[digest] = query
    if not operations:
        raise ValueError(f"{path}: no operations")
    return operations


@dataclass(frozen=True)
class Resolved:
    """What to run: ``query`` (None: no query, the schema says so), and ``register`` the hash to keep it
    under once it has passed validation (automatic mode, a newly sent query)."""

    query: str | None
    register: str | None = None


class PersistedQueries:
    """One gateway's persisted queries: the mode, the state store (automatic) or the allowlist."""

    def __init__(
        self, mode: Mode, store: Store, ttl_s: float, allowlist: dict[str, str] | None = None
    ) -> None:
        self.mode = mode
        self.store = store
        self.ttl_s = ttl_s
        self.allowlist = allowlist or {}

    async def resolve(self, query: str | None, extensions: dict[str, Any] | None) -> Resolved:
        """The query to run for an operation's ``query`` and ``extensions``; :class:`PersistedQueryError`
        when the operation may not run."""
        digest = _requested_hash(extensions)
        if digest is None:
            if self.mode == "allowlist" and (query is None or sha256_hex(query) not in self.allowlist):
                raise _not_in_list()
            return Resolved(query)
        if self.mode == "off":
            raise PersistedQueryError(
                "PERSISTED_QUERY_NOT_SUPPORTED",
                f"PersistedQueryNotSupported: persisted queries are off ({SETTING}); send the query itself.",
            )
        if query is not None and sha256_hex(query) != digest:
            raise PersistedQueryError(
                "BAD_USER_INPUT", "extensions.persistedQuery.sha256Hash is not the sha256 of the query.", 400
            )
        if self.mode == "allowlist":
            if digest not in self.allowlist:
                raise _not_in_list()
            return Resolved(self.allowlist[digest])
        if query is not None:
            return Resolved(query, register=digest)
        try:
            stored = await self.store.get(store_key("gqlpq", digest))
        except StoreUnavailable:
            raise PersistedQueryError(
                "UNAVAILABLE", "Persisted queries are unavailable: the state store cannot be reached.", 503
            ) from None
        if stored is None:
            # Exactly this message: APQ clients (Apollo's among them) retry with the query on seeing it.
            raise PersistedQueryError("PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
        return Resolved(stored.decode())

    async def register(self, digest: str, query: str) -> None:
        """Keep ``query`` under ``digest`` for the TTL (best effort: a client that misses sends it again)."""
        try:
            await self.store.set(store_key("gqlpq", digest), query.encode(), self.ttl_s)
        except StoreUnavailable:
            return


def _requested_hash(extensions: dict[str, Any] | None) -> str | None:
    """The sha256 ``extensions.persistedQuery`` names, None when it names none; a malformed one is a 400."""
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise PersistedQueryError(
            "BAD_USER_INPUT", "extensions.persistedQuery: only version 1 (sha256Hash) is supported.", 400
        )
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not SHA256.fullmatch(digest):
        raise PersistedQueryError(
            "BAD_USER_INPUT", "extensions.persistedQuery.sha256Hash must be 64 lowercase hex digits.", 400
        )
    return digest


def _not_in_list() -> PersistedQueryError:
    return PersistedQueryError(
        "PERSISTED_QUERY_NOT_IN_LIST",
        f"Only the operations of the allowlist may run here ({SETTING}: allowlist, "
        "features.graphql.persisted_queries_file).",
        403,
    )
