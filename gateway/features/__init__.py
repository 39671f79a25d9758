"""Pipeline features, one stage module each (cache, ratelimit, routing, budgets, usage...)."""
