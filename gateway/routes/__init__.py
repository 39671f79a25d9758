"""HTTP routes: the OpenAI-compatible API, health probes and the admin API."""
