"""``features.graphql``: whether ``/graphql`` is served and the limits every query is checked against
before it runs (gateway/routes/graphql.py).

Off by default: the GraphQL API is an optional extra (``pip install 'llm-gateway-planner[graphql]'``), and
a gateway that does not serve it has no reason to parse queries at all.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GraphQLConfig(BaseModel):
    """The GraphQL API's switch, its developer conveniences and its query limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    # The GraphiQL page on GET /graphql. Strawberry's page loads its scripts from a CDN: off by default.
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
