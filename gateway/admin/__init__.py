"""The admin API's library: scoped admin credentials, runtime virtual keys, their store and audit log.

The REST routes (gateway/routes/admin_v1.py) and the LiteLLM-compatible aliases (gateway/routes/litellm.py)
are thin doors over :class:`gateway.admin.keys.KeyAdmin`; neither keeps state or rules of its own.
"""
