"""``features.graphql``: whether ``/graphql`` is served and the limits every query is checked against
before it runs (gateway/routes/graphql.py).

Off by default: the GraphQL API is an optional extra (``pip install 'llm-gateway-planner[graphql]'``), and
a gateway that does not serve it has no reason to parse queries at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class GraphQLConfig(BaseModel):
    """The GraphQL API's switch, its developer conveniences and its query limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    # The GraphiQL page on GET /graphql, its assets served by the gateway (gateway/graphql/ide.py). Off by
    # default: a production gateway rarely wants a query editor on its public address.
    graphiql: bool = False
    # Schema introspection (__schema, __type). The SDL is in the repository and the docs, so tools do not
    # need it: off by default, which also denies a stranger with a key a map of the schema.
    introspection: bool = False
    # Nesting depth of a query's selections; deeper is refused before execution.
    max_depth: int = Field(default=8, ge=2, le=64)
    # Static cost of a query (each field 1, a list field times the page size it asks for); over it the
    # query is refused before execution, so one request cannot ask for unbounded work.
    max_cost: int = Field(default=2000, ge=10, le=1_000_000)
    # Aliases in one query (each alias repeats a field's work) and tokens in its text.
    max_aliases: int = Field(default=15, ge=1, le=1000)
    max_tokens: int = Field(default=2000, ge=50, le=100_000)
    # Operations in one batched request (a JSON array of queries); more is a 400.
    max_batch: int = Field(default=10, ge=1, le=100)
    # Subscriptions at once on one WebSocket connection.
    max_subscriptions: int = Field(default=10, ge=1, le=1000)
    # Persisted queries (gateway/graphql/persisted.py): off; automatic (Apollo's APQ, kept in the state
    # store for persisted_queries_ttl_s); allowlist (only the operations of persisted_queries_file run).
    persisted_queries: Literal["off", "automatic", "allowlist"] = "off"
    persisted_queries_ttl_s: int = Field(default=86_400, ge=60, le=30 * 86_400)
    persisted_queries_file: Path | None = None

    @field_validator("persisted_queries_file")
    @classmethod
    def _allowlist_loads(cls, value: Path | None) -> Path | None:
        # Read here so a bad file is a config error naming this key, at start (the route reads it again).
        from gateway.graphql.persisted import load_allowlist

        if value is not None:
            load_allowlist(value)
        return value

    @model_validator(mode="after")
    def _allowlist_needs_its_file(self) -> GraphQLConfig:
        if self.persisted_queries == "allowlist" and self.persisted_queries_file is None:
            raise ValueError(
                "persisted_queries: allowlist needs persisted_queries_file (the operations allowed)"
            )
        if self.persisted_queries != "allowlist" and self.persisted_queries_file is not None:
            raise ValueError("persisted_queries_file is read only with persisted_queries: allowlist")
        return self
