"""The GraphQL API (``/graphql``, ``features.graphql``): a typed read surface over models, the calling key,
usage, budgets and routes, and key mutations, all through the library functions the REST admin API calls.

- :mod:`gateway.graphql.access`: who is calling (virtual key, admin key or master key) and what it may read.
- :mod:`gateway.graphql.data`: the data-access functions, authorization included.
- :mod:`gateway.graphql.schema`: the strawberry types and resolvers (thin), and the exported SDL.
- :mod:`gateway.graphql.limits`: the static cost rule and the limit extensions.
"""
